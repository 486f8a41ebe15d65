"""A SIP peer on a raw UDP socket, for the messages SIPp cannot send.

SIPp rewrites every line end of what it sends to CRLF and cannot put NUL or other
control bytes in a message (its scenarios are XML), so a body with mixed line endings
or a binary ISUP part (SIP-I) is sent from here, byte for byte as given. ``RawCaller``
plays the carrier: INVITE, ACK of the 2xx, BYE. ``RawCallee`` plays the callee's trunk
(in a thread): provisional and final responses with the bodies given, then it waits for
the ACK and the BYE. Both keep every datagram they received, as received, for the leak
scan, and every wait is bounded.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from call_env import CALLEE, CALLER, Party, SipMsg

from b2bua.sip.message import Request, Response
from b2bua.sip.parser import parse_datagram

T1 = 0.5


@dataclass
class Body:
    """A body and the headers that describe it, as the peer sends them."""

    content_type: str | None = None
    content: bytes = b""
    headers: Sequence[str] = ()

    def head(self) -> bytes:
        lines = [*self.headers]
        if self.content_type is not None:
            lines.append(f"Content-Type: {self.content_type}")
        lines.append(f"Content-Length: {len(self.content)}")
        return "".join(line + "\r\n" for line in lines).encode()


class RawPeer:
    """One UDP socket on 127.0.0.1 and what it sent and received."""

    def __init__(self, port: int = 0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", port))
        self.port = self.sock.getsockname()[1]
        self.sent: list[bytes] = []
        self.received: list[bytes] = []

    def send(self, data: bytes, dest: tuple[str, int]) -> None:
        self.sent.append(data)
        self.sock.sendto(data, dest)

    def recv(self, until: float) -> tuple[Request | Response, tuple[str, int]] | None:
        """The next message before monotonic time ``until``, or None."""
        left = until - time.monotonic()
        if left <= 0:
            return None
        self.sock.settimeout(left)
        try:
            data, addr = self.sock.recvfrom(65536)
        except TimeoutError:
            return None
        self.received.append(data)
        return parse_datagram(data), addr

    def messages(self, direction: str = "received") -> list[SipMsg]:
        raws = self.received if direction == "received" else self.sent
        return [SipMsg(direction, raw) for raw in raws]

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RawCaller(RawPeer):
    """The carrier side: one call to ``service`` through ansim at ``dest``."""

    def __init__(self, dest: tuple[str, int], party: Party = CALLER) -> None:
        super().__init__()
        self.dest = dest
        self.party = party
        self.call_id = f"{party.national}-raw-{self.port}@127.0.0.1"
        self.tag = f"raw{self.port}"
        self.responses: list[Response] = []

    def _request(
        self, method: str, uri: str, cseq: int, to: str, body: Body, branch: str | None = None
    ) -> bytes:
        p = self.party
        branch = branch or f"z9hG4bK{method}{cseq}{time.monotonic_ns()}"
        head = (
            f"{method} {uri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch={branch}\r\n"
            f'From: "{p.dashed}" <sip:{p.national}@127.0.0.1:{self.port}>;tag={self.tag}\r\n'
            f"To: {to}\r\n"
            f"Call-ID: {self.call_id}\r\n"
            f"CSeq: {cseq} {method}\r\n"
            f"Contact: <sip:{p.e164}@127.0.0.1:{self.port}>\r\n"
            f'P-Asserted-Identity: "{p.dashed}" <sip:{p.e164}@127.0.0.1>\r\n'
            "Max-Forwards: 70\r\n"
        )
        return head.encode() + body.head() + b"\r\n" + body.content

    def call(self, service: str, body: Body, hold: float = 0.2, timeout: float = 10.0) -> int:
        """INVITE ``service`` with ``body``; ACK and BYE a 2xx. The final status."""
        deadline = time.monotonic() + timeout
        uri = f"sip:{service}@{self.dest[0]}:{self.dest[1]}"
        to = f"<{uri}>"
        branch = f"z9hG4bKinvite{time.monotonic_ns()}"
        invite = self._request("INVITE", uri, 1, to, body, branch)
        self.send(invite, self.dest)
        resend = time.monotonic() + T1
        final: Response | None = None
        while final is None:
            got = self.recv(min(resend, deadline))
            if got is None:
                assert time.monotonic() < deadline, "no final response to the INVITE"
                if not self.responses:
                    self.send(invite, self.dest)
                resend = time.monotonic() + T1
                continue
            msg = got[0]
            if isinstance(msg, Response) and msg.cseq[1] == b"INVITE":
                self.responses.append(msg)
                if msg.status >= 200:
                    final = msg
        to_tagged = f"{to};tag={(final.to_tag or b'').decode()}"
        if final.status >= 300:  # the ACK of a failure is part of the INVITE's transaction
            self.send(self._request("ACK", uri, 1, to_tagged, Body(), branch), self.dest)
            return final.status
        contact = final.get(b"contact") or b""
        target = contact.decode().strip("<>").split(">", 1)[0]
        self.send(self._request("ACK", target, 1, to_tagged, Body()), self.dest)
        time.sleep(hold)
        bye = self._request("BYE", target, 2, to_tagged, Body())
        self.send(bye, self.dest)
        resend = time.monotonic() + T1
        while True:
            got = self.recv(min(resend, deadline))
            assert time.monotonic() < deadline, "no answer to the BYE"
            if got is None:
                self.send(bye, self.dest)
                resend = time.monotonic() + T1
                continue
            msg = got[0]
            if isinstance(msg, Response) and msg.cseq[1] == b"BYE":
                return final.status


@dataclass
class Reply:
    """One response the callee sends to the INVITE."""

    status: int
    reason: str
    body: Body = field(default_factory=Body)


class RawCallee(RawPeer):
    """The callee's trunk: answers one INVITE with ``replies`` (the last one final), sends
    ``late`` after the final (a provisional the network delayed past it), then waits for
    the ACK and, after a 2xx, the BYE; runs in a thread between ``start`` and ``join``.

    ``lose`` names requests the network loses on the way to it: ``{b"ACK": 1}`` drops the
    first ACK as if it never arrived (it is kept in ``lost``), so the final is sent again
    on its timer. The final is resent every T1 until ACKed (a 2xx by the UAS core, a
    non-2xx by its transaction), as long as it waits."""

    def __init__(
        self,
        replies: Sequence[Reply],
        port: int = 0,
        party: Party = CALLEE,
        late: Sequence[Reply] = (),
        lose: dict[bytes, int] | None = None,
    ) -> None:
        super().__init__(port)
        self.replies = list(replies)
        self.late = list(late)
        self.party = party
        self.lose = dict(lose or {})
        self.lost: list[tuple[float, Request]] = []
        self.arrivals: list[tuple[float, Request]] = []  # every request kept, with its time
        self.requests: list[Request] = []
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self, timeout: float = 15.0) -> RawCallee:
        self._timeout = timeout
        self._thread.start()
        return self

    def join(self) -> None:
        self._thread.join(self._timeout + 5)
        assert not self._thread.is_alive(), "raw callee still running"
        if self.error is not None:
            raise self.error

    def _response(self, invite: Request, reply: Reply) -> bytes:
        p = self.party
        head = [f"SIP/2.0 {reply.status} {reply.reason}"]
        for name in (b"via", b"from", b"call-id", b"cseq"):
            for value in invite.get_all(name):
                head.append(f"{name.decode().title()}: {value.decode()}")
        to = (invite.get(b"to") or b"").decode()
        head.append(f"To: {to}" if ";tag=" in to else f"To: {to};tag=callee{self.port}")
        head += [
            f'Contact: "{p.dashed}" <sip:{p.e164}@127.0.0.1:{self.port}>',
            f"P-Asserted-Identity: <sip:{p.e164}@127.0.0.1>, <tel:{p.national}>",
        ]
        return (
            ("\r\n".join(head) + "\r\n").encode() + reply.body.head() + b"\r\n" + reply.body.content
        )

    def _run(self) -> None:
        try:
            self._serve()
        except BaseException as exc:  # reported by join()
            self.error = exc

    def _lost(self, msg: Request) -> bool:
        """Whether ``msg`` is one the network loses (see ``lose``)."""
        now = time.monotonic()
        left = self.lose.get(msg.method, 0)
        if left > 0:
            self.lose[msg.method] = left - 1
            self.lost.append((now, msg))
            return True
        self.arrivals.append((now, msg))
        return False

    def _serve(self) -> None:
        deadline = time.monotonic() + self._timeout
        invite: Request | None = None
        source: tuple[str, int] | None = None
        while invite is None:
            got = self.recv(deadline)
            assert got is not None, "no INVITE"
            if isinstance(got[0], Request) and got[0].method == b"INVITE":
                if self._lost(got[0]):
                    continue
                invite, source = got[0], got[1]
                self.requests.append(invite)
        assert source is not None
        for reply in self.replies[:-1]:
            self.send(self._response(invite, reply), source)
        final = self._response(invite, self.replies[-1])
        self.send(final, source)
        for reply in self.late:
            self.send(self._response(invite, reply), source)
        resend = time.monotonic() + T1
        acked = False
        while True:
            got = self.recv(min(resend, deadline))
            assert time.monotonic() < deadline, f"raw callee: acked={acked}, no BYE"
            if got is None:
                if not acked:
                    self.send(final, source)
                resend = time.monotonic() + T1
                continue
            msg, addr = got
            if not isinstance(msg, Request) or self._lost(msg):
                continue
            self.requests.append(msg)
            if msg.method == b"ACK":
                acked = True
                if self.replies[-1].status >= 300:  # the transaction is over: no dialog
                    return
            elif msg.method == b"INVITE":  # a retransmission: the last response again
                self.send(final, source)
            elif msg.method == b"BYE":
                self.send(self._response(msg, Reply(200, "OK")), addr)
                return
