"""A packet capture on the loopback interface with a raw socket (AF_PACKET, as root).

Every UDP datagram delivered to one of the watched addresses is kept with its source,
destination and payload, whatever the port: SIP, RTP and RTCP alike, which is what a
party really received. Each datagram crosses ``lo`` twice (once outgoing, once
incoming); only the incoming copy is kept. The capture runs in a thread of its own,
stops when ``stop()`` is called (or the context ends), and its loop is bounded by a
receive timeout.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from dataclasses import dataclass
from types import TracebackType

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


@dataclass(frozen=True)
class Datagram:
    src: tuple[str, int]
    dst: tuple[str, int]
    payload: bytes
    at: float

    @property
    def is_rtcp(self) -> bool:
        return (
            len(self.payload) >= 2 and self.payload[0] >> 6 == 2 and 192 <= self.payload[1] <= 223
        )

    @property
    def is_rtp(self) -> bool:
        return len(self.payload) >= 12 and self.payload[0] >> 6 == 2 and not self.is_rtcp

    @property
    def is_sip(self) -> bool:
        return self.payload[:8] == b"SIP/2.0 " or b" SIP/2.0\r\n" in self.payload[:300]


class LoopbackCapture:
    """UDP datagrams to ``addresses`` on ``lo``, captured while the context is open."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = {socket.inet_aton(a): a for a in addresses}
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
        self.sock.bind(("lo", 0))
        self.sock.settimeout(0.2)
        self.packets: list[Datagram] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LoopbackCapture:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self.sock.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                frame, addr = self.sock.recvfrom(65600)
            except TimeoutError:
                continue
            except OSError:
                return
            if addr[2] == PACKET_OUTGOING or len(frame) < 14 + 28:
                continue
            if frame[12:14] != b"\x08\x00":  # IPv4
                continue
            ip = frame[14:]
            ihl = (ip[0] & 0x0F) * 4
            if ip[9] != 17 or ip[16:20] not in self.addresses:  # UDP, to a watched address
                continue
            src_port, dst_port, length = struct.unpack("!HHH", ip[ihl : ihl + 6])
            payload = bytes(ip[ihl + 8 : ihl + length])
            self.packets.append(
                Datagram(
                    (socket.inet_ntoa(ip[12:16]), src_port),
                    (socket.inet_ntoa(ip[16:20]), dst_port),
                    payload,
                    time.monotonic(),
                )
            )

    def to(self, address: str) -> list[Datagram]:
        return [p for p in list(self.packets) if p.dst[0] == address]
