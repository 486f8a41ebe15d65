"""INVITE→200 latency as the wire saw it: from a capture of the carrier's SIPp traffic.

SIPp's own response times come from a coarse clock (CLOCK_MONOTONIC_COARSE: steps of a
scheduler tick, 4 ms on a 250 Hz kernel), so its p99 moves in 4 ms steps and a change of
less than a step is invisible or doubled. This module measures the same interval from
the kernel's receive timestamps (microseconds): ``Capture`` runs ``dumpcap`` on ``lo``
with a kernel filter for the carrier SIPp's and the callee SIPp's UDP ports, and
``invite_to_200`` reads the pcap file afterwards: for every Call-ID, the time from the
first INVITE sent to the engine to the first 200 answering it; ``breakdown`` splits that
time into the engine's share (both legs' transit) and the callee's.
"""

from __future__ import annotations

import shutil
import signal
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

DUMPCAP = shutil.which("dumpcap")
SNAPLEN = 1024  # enough for a request or response line, Call-ID and CSeq
# The port's datagrams whose payload starts "INVI" or "SIP/": INVITEs and responses (the
# kernel drops the ACKs and BYEs before they are copied).
FILTER = "({ports}) and (udp[8:4] = 0x494e5649 or udp[8:4] = 0x5349502f)"
# pcap link types: bytes before the IPv4 header
_LINK_HEADER = {0: 4, 1: 14, 113: 16, 276: 20}


class Capture:
    """``dumpcap`` writing the INVITEs and responses to or from ``ports`` on ``lo`` into
    ``path``."""

    def __init__(
        self, path: Path, ports: tuple[int, ...], preexec: Callable[[], None] | None = None
    ) -> None:
        if DUMPCAP is None:
            raise RuntimeError("dumpcap (Debian wireshark-common or tshark) is not installed")
        self.path = path
        self.proc = subprocess.Popen(
            [DUMPCAP, "-i", "lo", "-f", FILTER.format(ports=" or ".join(f"udp port {p}" for p in ports)), "-s", str(SNAPLEN), "-B", "64",
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


def datagrams(path: Path) -> Iterator[tuple[float, int, int, bytes]]:
    """(kernel timestamp, source port, destination port, payload) of each UDP/IPv4
    datagram of the pcap file ``path``, in capture order."""
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
    ip = _LINK_HEADER.get(link)
    if ip is None:
        raise ValueError(f"{path}: link type {link} not handled")
    record = struct.Struct(endian + "IIII")
    pos = 24
    end = len(data)
    while pos + 16 <= end:
        sec, frac, incl, _orig = record.unpack_from(data, pos)
        pos += 16
        packet = data[pos : pos + incl]
        pos += incl
        if len(packet) < ip + 28 or packet[ip] >> 4 != 4 or packet[ip + 9] != 17:
            continue
        udp = ip + (packet[ip] & 0x0F) * 4
        src, dst = struct.unpack_from("!HH", packet, udp)
        yield sec + frac * scale, src, dst, packet[udp + 8 :]


def _user(payload: bytes) -> bytes:
    """The user part of a request line's sip: URI."""
    line = payload[: payload.find(b"\r\n")]
    colon = line.find(b":")
    at = line.find(b"@", colon)
    return line[colon + 1 : at] if colon >= 0 and at > colon else b""


def _is_200_to_invite(payload: bytes) -> bool:
    if not payload.startswith(b"SIP/2.0 200"):
        return False
    cseq = _header(payload, b"CSeq", b"CSeq")
    return cseq is not None and cseq.endswith(b"INVITE")


def invite_to_200(path: Path, server_port: int) -> list[float]:
    """Seconds from each call's first INVITE to ``server_port`` to the first 200 for it
    from that port (the carrier's view)."""
    sent: dict[bytes, float] = {}
    answered: dict[bytes, float] = {}
    for t, src, dst, payload in datagrams(path):
        if dst == server_port and payload.startswith(b"INVITE "):
            call_id = _header(payload, b"Call-ID", b"i")
            if call_id is not None and call_id not in sent:
                sent[call_id] = t
        elif src == server_port and _is_200_to_invite(payload):
            call_id = _header(payload, b"Call-ID", b"i")
            if call_id is not None and call_id not in answered:
                answered[call_id] = t
    return [answered[c] - t0 for c, t0 in sent.items() if c in answered]


def breakdown(
    path: Path, server_port: int, callee_port: int, callee_user: Callable[[bytes], bytes]
) -> dict[str, list[float]]:
    """Where each call's INVITE->200 went, from a capture of both of the engine's legs:
    ``engine``, the time the engine held the INVITE and then the 200 (carrier's INVITE
    to the INVITE to the callee, plus the callee's 200 to the 200 to the carrier);
    ``callee``, the callee's INVITE->200; ``total``, the carrier's. The engine gives the
    outgoing leg a Call-ID of its own, so the legs are paired by the dialled number
    (``callee_user`` gives the callee's user part for the carrier's), in order."""
    a_invite: dict[bytes, float] = {}
    a_200: dict[bytes, float] = {}
    b_invite: dict[bytes, float] = {}
    b_200: dict[bytes, float] = {}
    a_by_user: dict[bytes, list[bytes]] = {}
    b_by_user: dict[bytes, list[bytes]] = {}
    for t, src, dst, payload in datagrams(path):
        if payload.startswith(b"INVITE "):
            call_id = _header(payload, b"Call-ID", b"i")
            if call_id is None:
                continue
            if dst == server_port and src != callee_port and call_id not in a_invite:
                a_invite[call_id] = t
                a_by_user.setdefault(callee_user(_user(payload)), []).append(call_id)
            elif dst == callee_port and src == server_port and call_id not in b_invite:
                b_invite[call_id] = t
                b_by_user.setdefault(_user(payload), []).append(call_id)
        elif _is_200_to_invite(payload):
            call_id = _header(payload, b"Call-ID", b"i")
            if call_id is None:
                continue
            if src == server_port and dst != callee_port:
                a_200.setdefault(call_id, t)
            elif src == callee_port and dst == server_port:
                b_200.setdefault(call_id, t)
    out: dict[str, list[float]] = {"total": [], "engine": [], "callee": []}
    for user, a_calls in a_by_user.items():
        for a, b in zip(a_calls, b_by_user.get(user, []), strict=False):
            if a not in a_200 or b not in b_200:
                continue
            t1, t2, t3, t4 = a_invite[a], b_invite[b], b_200[b], a_200[a]
            out["total"].append(t4 - t1)
            out["engine"].append((t2 - t1) + (t4 - t3))
            out["callee"].append(t3 - t2)
    return out
