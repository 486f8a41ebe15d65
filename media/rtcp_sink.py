"""Where the parties' RTCP goes when rtpengine carries a call's media: nowhere.

rtpengine, asked to generate RTCP of its own, consumes a party's RTCP compound only when
it holds a report (SR, RR or XR); a packet of SDES, BYE or APP alone, or with the BYE
ahead of the report (as libre-based softphones send at hang-up), is forwarded unchanged
to the other party, CNAME and all: the party's address of record, its real number. So in
rtpengine mode every party is told (``a=rtcp:<port> IN IP4 <address>``, RFC 3605) to
send its RTCP to this socket instead, which the engine binds and never reads: the kernel
drops what its one small buffer cannot hold, without an ICMP error and without a wakeup.
rtpengine's own reports still reach each party from rtpengine's ports.
"""

from __future__ import annotations

import ipaddress
import socket

__all__ = ["RtcpSink"]


class RtcpSink:
    """A bound UDP socket that is never read; ``address`` is what SDP names."""

    def __init__(self, host: str, port: int = 0) -> None:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)  # the kernel's minimum
            self._sock.bind((host, port))
        except OSError:
            self._sock.close()
            raise
        self.host = host
        self.port: int = self._sock.getsockname()[1]

    def close(self) -> None:
        self._sock.close()
