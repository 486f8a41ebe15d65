"""A network namespace whose UDP datagrams are lost and reordered, for loss tests and benches.

The kernel here has no netem, so the namespace does it with nftables and a small process:
its input hook drops ``loss`` % of UDP datagrams at random (``numgen random``), and hands
another ``reorder`` % of them to a delayer over NFLOG (``log group``, the packet copied)
before dropping them too. The delayer, this file run as a program inside the namespace,
sends each such datagram again from a raw socket after a random delay of ``delay_ms``
(so datagrams sent after it arrive first), marked so that the rules let it through.
Nothing is delayed on the way out, so a sender never sees an error (a drop in the output
hook would fail ``sendto`` with EPERM, which is no network's behaviour).

::

    with LossyNet(loss=5.0, reorder=2.0) as net, net.entered():
        ...   # sockets made and processes started here live in the namespace

With ``capture`` a file, dumpcap (Debian ``tshark``) records every datagram sent in the
namespace and, as interface ``nflog:8``, every one dropped, for reading what happened to
each call. ``entered()`` moves the calling thread into the namespace (``setns``) and back; children
started meanwhile stay there. ``counters()`` says how many datagrams were dropped and
delayed so far. Leaving the ``with`` block stops the delayer and deletes the namespace
whatever happened inside. Root only (``ip netns`` and ``nft`` must be installed: Debian
``iproute2`` and ``nftables``).

NFLOG and raw-socket handling are written here (a few netlink messages) rather than taken
from a library: the ones on PyPI wrap libnetfilter_log or libnetfilter_queue and need
their C headers to build, and the kernel here has no nftables ``queue`` statement anyway.
"""

from __future__ import annotations

import argparse
import ctypes
import heapq
import os
import random
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

REINJECT_MARK = 0x5E5E  # skb mark of datagrams the delayer sends again: let through
NFLOG_GROUP = 7  # datagrams to delay, for the delayer
LOST_GROUP = 8  # datagrams dropped, copied there for a capture (``log_lost``)
CLONE_NEWNET = 0x40000000

# netlink / nfnetlink_log constants (linux/netlink.h, linux/netfilter/nfnetlink_log.h)
NETLINK_NETFILTER = 12
NLM_F_REQUEST = 1
NLM_F_ACK = 4
NLMSG_ERROR = 2
NFNL_SUBSYS_ULOG = 4
NFULNL_MSG_PACKET = 0
NFULNL_MSG_CONFIG = 1
NFULA_CFG_CMD = 1
NFULA_CFG_MODE = 2
NFULA_CFG_TIMEOUT = 4
NFULA_CFG_QTHRESH = 5
NFULNL_CFG_CMD_BIND = 1
NFULNL_COPY_PACKET = 2
NFULA_PAYLOAD = 9
SO_MARK = 36


def available() -> str | None:
    """Why a lossy namespace cannot be made here, or None when it can."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, nftables, raw sockets)"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (Debian iproute2, nftables)"
    return None


def rules(loss: float, reorder: float, log_lost: bool = False) -> str:
    """The namespace's nftables ruleset: per-mille draws, counted; with ``log_lost`` the
    dropped datagrams are copied to NFLOG group ``LOST_GROUP`` (``dumpcap -i nflog:8``)."""
    lost = round(loss * 10)
    delayed = round(reorder * 10)
    lines = [
        "table inet lossy {",
        "  chain input {",
        "    type filter hook input priority 0; policy accept;",
        f"    meta mark {REINJECT_MARK:#x} counter accept",
    ]
    if lost:
        log = f"log group {LOST_GROUP} snaplen 65535 " if log_lost else ""
        lines.append(f"    meta l4proto udp numgen random mod 1000 < {lost} counter {log}drop")
    if delayed:
        lines.append(
            f"    meta l4proto udp numgen random mod 1000 < {delayed} counter "
            f"log group {NFLOG_GROUP} snaplen 65535 queue-threshold 1 drop"
        )
    lines += ["  }", "}"]
    return "\n".join(lines) + "\n"


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


class LossyNet:
    """One namespace with loss and reordering on UDP (see the module docstring)."""

    def __init__(
        self,
        loss: float = 5.0,
        reorder: float = 0.0,
        delay_ms: tuple[float, float] = (10.0, 80.0),
        name: str | None = None,
        seed: int | None = None,
        capture: Path | None = None,
    ) -> None:
        self.loss = loss
        self.reorder = reorder
        self.delay_ms = delay_ms
        self.name = name or f"ansim-lossy-{os.getpid()}"
        self.seed = seed
        self.capture = capture
        self.delayer: subprocess.Popen[bytes] | None = None
        self.dumpcap: subprocess.Popen[bytes] | None = None
        self._made = False

    # -- lifecycle -----------------------------------------------------------------------------
    def __enter__(self) -> LossyNet:
        try:
            self._create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _create(self) -> None:
        why = available()
        if why is not None:
            raise RuntimeError(f"no lossy namespace: {why}")
        subprocess.run(["ip", "netns", "add", self.name], check=True, capture_output=True)
        self._made = True
        self.run(["ip", "link", "set", "lo", "up"])
        self.run(["nft", "-f", "-"], input=rules(self.loss, self.reorder, self.capture is not None))
        if self.capture is not None:
            # every datagram sent (loopback) and, on interface nflog:8, those dropped
            cap = [*self.prefix(), "dumpcap", "-q", "-i", "lo", "-i", f"nflog:{LOST_GROUP}"]
            self.dumpcap = subprocess.Popen(
                [*cap, "-B", "64", "-w", str(self.capture)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1.0)
        if self.reorder > 0:
            cmd = [
                *self.prefix(),
                sys.executable,
                str(Path(__file__).resolve()),
                "delayer",
                "--min-ms",
                str(self.delay_ms[0]),
                "--max-ms",
                str(self.delay_ms[1]),
            ]
            if self.seed is not None:
                cmd += ["--seed", str(self.seed)]
            self.delayer = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
            assert self.delayer.stdout is not None
            ready, _, _ = select.select([self.delayer.stdout], [], [], 10.0)
            line = self.delayer.stdout.readline() if ready else b""
            if line.strip() != b"ready":
                raise RuntimeError(f"the delayer did not start: {line!r}")

    def close(self) -> None:
        """Stop the delayer and delete the namespace (idempotent)."""
        cap = self.dumpcap
        if cap is not None:
            cap.send_signal(signal.SIGINT)
            try:
                cap.wait(10)
            except subprocess.TimeoutExpired:
                cap.kill()
                cap.wait(5)
            self.dumpcap = None
        proc = self.delayer
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
            if proc.stdout is not None:
                proc.stdout.close()
            self.delayer = None
        if self._made:
            subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
            self._made = False

    # -- use -----------------------------------------------------------------------------------
    def prefix(self) -> list[str]:
        """The command prefix that runs a program inside the namespace."""
        return ["ip", "netns", "exec", self.name]

    def run(self, cmd: Sequence[str], input: str | None = None) -> str:
        """Run ``cmd`` inside the namespace; its output (raises on failure)."""
        done = subprocess.run(
            [*self.prefix(), *cmd], input=input, capture_output=True, text=True, timeout=30
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: {done.stderr.strip() or done.stdout.strip()}")
        return done.stdout

    @contextmanager
    def entered(self) -> Iterator[None]:
        """Run the calling thread in the namespace meanwhile (with what it starts)."""
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            target = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
            try:
                _setns(target)
            finally:
                os.close(target)
            try:
                yield
            finally:
                _setns(own)
        finally:
            os.close(own)

    def counters(self) -> dict[str, int]:
        """Datagrams dropped (``lost``) and delayed (``delayed``) so far, and those the
        delayer sent again (``reinjected``)."""
        text = self.run(["nft", "list", "table", "inet", "lossy"])
        out = {"reinjected": 0, "lost": 0, "delayed": 0}
        for line in text.splitlines():
            m = re.search(r"counter packets (\d+)", line)
            if m is None:
                continue
            n = int(m.group(1))
            if "meta mark" in line:
                out["reinjected"] = n
            elif f"log group {NFLOG_GROUP} " in line:
                out["delayed"] = n
            elif "drop" in line:
                out["lost"] = n
        return out


# -- the delayer (runs inside the namespace) -------------------------------------------------


def _attr(kind: int, data: bytes) -> bytes:
    length = 4 + len(data)
    return struct.pack("=HH", length, kind) + data + b"\0" * (-length % 4)


def _nfulnl_config(seq: int, group: int, attrs: bytes) -> bytes:
    body = struct.pack("=BB", socket.AF_UNSPEC, 0) + struct.pack(">H", group) + attrs
    kind = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG
    return struct.pack("=IHHII", 16 + len(body), kind, NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body


def _expect_ack(sock: socket.socket) -> None:
    data = sock.recv(65536)
    _, kind = struct.unpack_from("=IH", data)
    if kind == NLMSG_ERROR:
        (err,) = struct.unpack_from("=i", data, 16)
        if err != 0:
            raise OSError(-err, f"nfnetlink_log: {os.strerror(-err)}")


def open_nflog(group: int) -> socket.socket:
    """A netlink socket bound to NFLOG ``group``, whole packets copied, one at a time."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind((0, 0))
    messages = [
        _attr(NFULA_CFG_CMD, struct.pack("=B", NFULNL_CFG_CMD_BIND)),
        _attr(NFULA_CFG_MODE, struct.pack(">IB", 0xFFFF, NFULNL_COPY_PACKET) + b"\0"),
        _attr(NFULA_CFG_QTHRESH, struct.pack(">I", 1)),
        _attr(NFULA_CFG_TIMEOUT, struct.pack(">I", 0)),
    ]
    for seq, attrs in enumerate(messages, 1):
        sock.send(_nfulnl_config(seq, group, attrs))
        _expect_ack(sock)
    return sock


def nflog_payloads(data: bytes) -> Iterator[bytes]:
    """The IP packets in one read from an NFLOG socket."""
    packet_kind = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET
    off = 0
    while off + 16 <= len(data):
        length, kind = struct.unpack_from("=IH", data, off)
        if length < 16:
            break
        if kind == packet_kind:
            pos = off + 20  # nlmsghdr + nfgenmsg
            end = off + length
            while pos + 4 <= end:
                alen, atype = struct.unpack_from("=HH", data, pos)
                if alen < 4:
                    break
                if atype & 0x3FFF == NFULA_PAYLOAD:
                    yield data[pos + 4 : pos + alen]
                pos += (alen + 3) & ~3
        off += (length + 3) & ~3


def unchecked_udp(packet: bytes) -> bytes:
    """``packet`` (IPv4) with its UDP checksum set to 0 (none): a datagram copied where the
    checksum is left to the device (loopback) holds only a partial sum."""
    if len(packet) < 20 or packet[0] >> 4 != 4 or packet[9] != socket.IPPROTO_UDP:
        return packet
    ihl = (packet[0] & 0x0F) * 4
    if len(packet) < ihl + 8:
        return packet
    return packet[: ihl + 6] + b"\0\0" + packet[ihl + 8 :]


def delayer(min_ms: float, max_ms: float, seed: int | None = None) -> None:
    """Send every datagram NFLOG hands over again after a random delay, until SIGTERM."""
    rng = random.Random(seed)
    nflog = open_nflog(NFLOG_GROUP)
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    raw.setsockopt(socket.SOL_SOCKET, SO_MARK, REINJECT_MARK)
    stop = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    due: list[tuple[float, int, bytes]] = []
    n = 0
    print("ready", flush=True)
    while not stop:
        now = time.monotonic()
        while due and due[0][0] <= now:
            packet = heapq.heappop(due)[2]
            dst = socket.inet_ntoa(packet[16:20])
            try:
                raw.sendto(packet, (dst, 0))
            except OSError:
                pass
        timeout = max(0.0, due[0][0] - now) if due else 0.5
        try:
            ready, _, _ = select.select([nflog], [], [], timeout)
        except InterruptedError:
            continue
        if not ready:
            continue
        try:
            data = nflog.recv(1 << 20)
        except OSError:  # ENOBUFS: the kernel dropped some; they count as lost
            continue
        now = time.monotonic()
        for packet in nflog_payloads(data):
            if len(packet) >= 20 and packet[0] >> 4 == 4:
                n += 1
                delay = rng.uniform(min_ms, max_ms) / 1000
                heapq.heappush(due, (now + delay, n, unchecked_udp(packet)))


def main() -> None:
    ap = argparse.ArgumentParser(description="the delayer of a lossy namespace")
    sub = ap.add_subparsers(dest="command", required=True)
    d = sub.add_parser("delayer", help="resend NFLOG'd datagrams later (inside the namespace)")
    d.add_argument("--min-ms", type=float, default=10.0)
    d.add_argument("--max-ms", type=float, default=80.0)
    d.add_argument("--seed", type=int)
    args = ap.parse_args()
    delayer(args.min_ms, args.max_ms, args.seed)


if __name__ == "__main__":
    main()
