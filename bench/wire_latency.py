"""INVITE→200 latency as the wire saw it: from a capture of the carrier's SIPp traffic.

SIPp's own response times come from a coarse clock (CLOCK_MONOTONIC_COARSE: steps of a
scheduler tick, 4 ms on a 250 Hz kernel), so its p99 moves in 4 ms steps and a change of
less than a step is invisible or doubled. This module measures the same interval from
the kernel's receive timestamps (microseconds): ``Capture`` runs ``dumpcap`` on ``lo``
with a kernel filter for one UDP port (the carrier SIPp's), and ``invite_to_200`` reads
the pcap file afterwards: for every Call-ID, the time from the first INVITE sent to the
engine to the first 200 answering it.
"""

from __future__ import annotations

import shutil
import signal
import struct
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

DUMPCAP = shutil.which("dumpcap")
SNAPLEN = 1024  # enough for a request or response line, Call-ID and CSeq
# The port's datagrams whose payload starts "INVI" or "SIP/": INVITEs and responses (the
# kernel drops the ACKs and BYEs before they are copied).
FILTER = "udp port {port} and (udp[8:4] = 0x494e5649 or udp[8:4] = 0x5349502f)"
# pcap link types: bytes before the IPv4 header
_LINK_HEADER = {0: 4, 1: 14, 113: 16, 276: 20}


class Capture:
    """``dumpcap`` writing UDP datagrams to or from ``port`` on ``lo`` into ``path``."""

    def __init__(self, path: Path, port: int, preexec: Callable[[], None] | None = None) -> None:
        if DUMPCAP is None:
            raise RuntimeError("dumpcap (Debian wireshark-common or tshark) is not installed")
        self.path = path
        self.proc = subprocess.Popen(
            [DUMPCAP, "-i", "lo", "-f", FILTER.format(port=port), "-s", str(SNAPLEN), "-B", "64",
             "-P", "-q", "-w", str(path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=preexec,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while not (path.exists() and path.stat().st_size >= 24):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                self.stop()
                raise RuntimeError(f"dumpcap did not start: {err}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # dumpcap writes what it holds, then exits
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _header(payload: bytes, name: bytes, compact: bytes) -> bytes | None:
    for key in (b"\r\n" + name + b":", b"\r\n" + compact + b":"):
        i = payload.find(key)
        if i >= 0:
            end = payload.find(b"\r\n", i + 2)
            return payload[i + len(key) : end if end >= 0 else len(payload)].strip()
    return None


def invite_to_200(path: Path, server_port: int, since: float = 0.0) -> list[float]:
    """Seconds from each call's first INVITE to ``server_port`` to the first 200 for it
    from that port, for calls whose INVITE left at or after ``since`` (seconds after the
    capture's first packet)."""
    data = path.read_bytes()
    magic = struct.unpack_from("<I", data)[0]
    if magic in (0xA1B2C3D4, 0xA1B23C4D):
        endian = "<"
    elif magic in (0xD4C3B2A1, 0x4D3CB2A1):
        endian = ">"
        magic = struct.unpack_from(">I", data)[0]
    else:
        raise ValueError(f"{path}: not a pcap file")
    scale = 1e-9 if magic == 0xA1B23C4D else 1e-6
    link = struct.unpack_from(endian + "I", data, 20)[0]
    skip = _LINK_HEADER.get(link)
    if skip is None:
        raise ValueError(f"{path}: link type {link} not handled")
    record = struct.Struct(endian + "IIII")
    sent: dict[bytes, float] = {}
    answered: dict[bytes, float] = {}
    first: float | None = None
    pos = 24
    end = len(data)
    while pos + 16 <= end:
        sec, frac, incl, _orig = record.unpack_from(data, pos)
        pos += 16
        packet = data[pos : pos + incl]
        pos += incl
        t = sec + frac * scale
        if first is None:
            first = t
        ip = skip
        if len(packet) < ip + 28 or packet[ip] >> 4 != 4 or packet[ip + 9] != 17:
            continue
        udp = ip + (packet[ip] & 0x0F) * 4
        src, dst = struct.unpack_from("!HH", packet, udp)
        payload = packet[udp + 8 :]
        if dst == server_port and payload.startswith(b"INVITE "):
            call_id = _header(payload, b"Call-ID", b"i")
            if call_id is not None and call_id not in sent and t - first >= since:
                sent[call_id] = t
        elif src == server_port and payload.startswith(b"SIP/2.0 200"):
            cseq = _header(payload, b"CSeq", b"CSeq")
            if cseq is None or not cseq.endswith(b"INVITE"):
                continue
            call_id = _header(payload, b"Call-ID", b"i")
            if call_id is not None and call_id not in answered:
                answered[call_id] = t
    return [answered[c] - t0 for c, t0 in sent.items() if c in answered]
