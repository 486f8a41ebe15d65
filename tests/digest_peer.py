"""SIP peers on raw UDP sockets that speak digest authentication with code of their own.

The digest computation here is written from RFC 7616 §3.4 independently of ansim's
``b2bua.sip.digest`` (and checked against the RFC's worked example in
``tests/test_calls_auth.py``), so that ansim's challenges and answers are judged by a
second implementation, for the algorithms SIPp does not know (SHA-256, SHA-512-256).

``AuthCaller`` is a carrier placing calls to ansim that answers its challenges (or
answers them wrongly, replays an answer, or waits for its nonce to go stale).
``ChallengingCallee`` is a callee trunk that challenges every request ansim sends it
(INVITE, re-INVITE, BYE) with 407 or 401 and checks the credentials ansim answers with.
Every wait is bounded; the callee runs in a thread between ``start`` and ``join``.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from dataclasses import dataclass, field

from raw_sip import RawPeer

from b2bua.sip.message import Request, Response

T1 = 0.5
_HASH = {"MD5": "md5", "SHA-256": "sha256", "SHA-512-256": "sha512_256"}
_PARAM = re.compile(r'([A-Za-z-]+)\s*=\s*("((?:[^"\\]|\\.)*)"|[^,\s]+)')


def h(algorithm: str, text: str) -> str:
    return hashlib.new(_HASH[algorithm.upper()], text.encode()).hexdigest()


def params(value: str) -> dict[str, str]:
    """The parameters of a Digest challenge or credentials value, unquoted."""
    assert value.lower().startswith("digest "), value
    out = {}
    for m in _PARAM.finditer(value[7:]):
        raw = m.group(3) if m.group(3) is not None else m.group(2)
        out[m.group(1).lower()] = re.sub(r"\\(.)", r"\1", raw)
    return out


def response(
    algorithm: str,
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    nc: str,
    cnonce: str,
    qop: str = "auth",
) -> str:
    """RFC 7616 §3.4.1 with qop=auth: KD(H(A1), nonce:nc:cnonce:qop:H(A2))."""
    ha1 = h(algorithm, f"{username}:{realm}:{password}")
    ha2 = h(algorithm, f"{method}:{uri}")
    return h(algorithm, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


def credentials(
    challenge: dict[str, str],
    username: str,
    password: str,
    method: str,
    uri: str,
    nc: int = 1,
    cnonce: str | None = None,
) -> str:
    """The Authorization / Proxy-Authorization value answering ``challenge``."""
    algorithm = challenge.get("algorithm", "MD5")
    cnonce = cnonce or os.urandom(8).hex()
    nc_text = f"{nc:08x}"
    resp = response(
        algorithm, username, challenge["realm"], password, method, uri, challenge["nonce"],
        nc_text, cnonce,
    )  # fmt: skip
    value = (
        f'Digest username="{username}", realm="{challenge["realm"]}", '
        f'nonce="{challenge["nonce"]}", uri="{uri}", response="{resp}", '
        f'algorithm={algorithm}, cnonce="{cnonce}", qop=auth, nc={nc_text}'
    )
    if "opaque" in challenge:
        value += f', opaque="{challenge["opaque"]}"'
    return value


def check(value: str, method: str, username: str, password: str, realm: str) -> str | None:
    """None when ``value`` (credentials sent with ``method``) is right for ``username``
    and ``password`` in ``realm``, else what is wrong."""
    p = params(value)
    if p.get("username") != username or p.get("realm") != realm:
        return f"username/realm {p.get('username')!r}/{p.get('realm')!r}"
    if p.get("qop") != "auth" or "nc" not in p or "cnonce" not in p:
        return f"qop {p.get('qop')!r}"
    want = response(
        p.get("algorithm", "MD5"), username, realm, password, method, p["uri"], p["nonce"],
        p["nc"], p["cnonce"],
    )  # fmt: skip
    return None if want == p.get("response") else "wrong response"


def challenges(msg: Response, header: str) -> list[dict[str, str]]:
    return [params(v.decode()) for v in msg.get_all(header.lower().encode())]


class AuthCaller(RawPeer):
    """The carrier side: INVITEs to ``service`` through ansim at ``dest`` from
    127.0.0.``host``, answered as the test says."""

    def __init__(self, dest: tuple[str, int], host: str = "127.0.0.1") -> None:
        super().__init__()
        if host != "127.0.0.1":
            self.sock.close()
            import socket

            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.bind((host, 0))
            self.port = self.sock.getsockname()[1]
        self.host = host
        self.dest = dest
        self.n = 0

    def new_call(self) -> tuple[str, str]:
        """(Call-ID, From tag) of a new call."""
        self.n += 1
        return f"auth-{self.port}-{self.n}@{self.host}", f"t{self.port}x{self.n}"

    def uri(self, service: str) -> str:
        return f"sip:{service}@{self.dest[0]}:{self.dest[1]}"

    def request(
        self,
        method: str,
        service: str,
        call_id: str,
        tag: str,
        cseq: int,
        *,
        to_tag: str | None = None,
        uri: str | None = None,
        branch: str | None = None,
        extra: tuple[str, ...] = (),
    ) -> bytes:
        branch = branch or f"z9hG4bK{method.lower()}{cseq}x{time.monotonic_ns()}"
        to = f"<{self.uri(service)}>" + (f";tag={to_tag}" if to_tag else "")
        body = b""
        if method == "INVITE":
            body = (
                f"v=0\r\no=- 1 1 IN IP4 {self.host}\r\ns=-\r\nc=IN IP4 {self.host}\r\n"
                f"t=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
            ).encode()
        head = [
            f"{method} {uri or self.uri(service)} SIP/2.0",
            f"Via: SIP/2.0/UDP {self.host}:{self.port};branch={branch};rport",
            f"From: <sip:+821047382916@{self.host}:{self.port}>;tag={tag}",
            f"To: {to}",
            f"Call-ID: {call_id}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:carrier@{self.host}:{self.port}>",
            "Max-Forwards: 70",
            *extra,
        ]
        if body:
            head.append("Content-Type: application/sdp")
        head.append(f"Content-Length: {len(body)}")
        data = ("\r\n".join(head) + "\r\n\r\n").encode() + body
        self.send(data, self.dest)
        return data

    def final(
        self, call_id: str, cseq: int, method: str, resend: bytes, timeout: float = 8.0
    ) -> Response:
        """The final response to request ``cseq`` of ``call_id`` (resent while nothing comes)."""
        deadline = time.monotonic() + timeout
        got_any = False
        while True:
            assert time.monotonic() < deadline, f"no final response to {method} {cseq}"
            got = self.recv(min(time.monotonic() + T1, deadline))
            if got is None:
                if not got_any:
                    self.send(resend, self.dest)
                continue
            msg = got[0]
            if not isinstance(msg, Response) or msg.call_id != call_id.encode():
                continue
            if msg.cseq != (cseq, method.encode()):
                continue
            got_any = True
            if msg.status >= 200:
                return msg

    def ack_failure(
        self, service: str, call_id: str, tag: str, cseq: int, invite: bytes, resp: Response
    ) -> None:
        """The ACK of a failure response: same branch as the INVITE, the response's To tag."""
        branch = re.search(rb"branch=([^;\s]+)", invite)
        assert branch is not None
        self.request("ACK", service, call_id, tag, cseq, to_tag=(resp.to_tag or b"").decode(),
                     branch=branch.group(1).decode())  # fmt: skip

    def hang_up(self, service: str, call_id: str, tag: str, cseq: int, ok: Response) -> int:
        """ACK the 2xx, then BYE; the BYE's final status."""
        contact = (ok.get(b"contact") or b"").decode()
        target = contact[contact.find("<") + 1 : contact.find(">")] if "<" in contact else contact
        to_tag = (ok.to_tag or b"").decode()
        self.request("ACK", service, call_id, tag, cseq, to_tag=to_tag, uri=target)
        time.sleep(0.1)
        bye = self.request("BYE", service, call_id, tag, cseq + 1, to_tag=to_tag, uri=target)
        return self.final(call_id, cseq + 1, "BYE", bye).status

    def challenged_invite(
        self, service: str, header: str = "Proxy-Authenticate"
    ) -> tuple[str, str, list[dict[str, str]], Response]:
        """A new call's first INVITE, ACKed after its challenge: (Call-ID, tag, the
        challenges, the response)."""
        call_id, tag = self.new_call()
        invite = self.request("INVITE", service, call_id, tag, 1)
        resp = self.final(call_id, 1, "INVITE", invite)
        self.ack_failure(service, call_id, tag, 1, invite, resp)
        return call_id, tag, challenges(resp, header), resp

    def answer(
        self,
        service: str,
        call_id: str,
        tag: str,
        cseq: int,
        authorization: str,
        header: str = "Proxy-Authorization",
    ) -> Response:
        """The INVITE ``cseq`` with credentials; its final response (a failure ACKed)."""
        invite = self.request(
            "INVITE", service, call_id, tag, cseq, extra=(f"{header}: {authorization}",)
        )
        resp = self.final(call_id, cseq, "INVITE", invite)
        if resp.status >= 300:
            self.ack_failure(service, call_id, tag, cseq, invite, resp)
        return resp


@dataclass
class Checked:
    """One request the challenging callee received, and what it made of it."""

    method: str
    cseq: int
    call_id: str
    from_tag: str
    authorization: str | None
    problem: str | None  # None: the credentials were right (or there were none)


@dataclass
class ChallengingCallee(RawPeer):
    """A callee trunk that challenges each INVITE, re-INVITE and BYE once (``status`` 407
    or 401, ``algorithm``), checks the answer, and answers good credentials as a phone
    would (180 and 200 with SDP; 200 to a BYE). With ``refuse`` it challenges the answer
    again instead, as a trunk does with credentials it does not accept."""

    port: int = 0
    username: str = "ansim-sha"
    password: str = "sha-secret"
    realm: str = "callee.test"
    algorithm: str = "SHA-256"
    status: int = 407
    refuse: bool = False
    max_invites: int | None = None  # stop after this many INVITEs (no BYE expected)
    timeout: float = 20.0
    checked: list[Checked] = field(default_factory=list)
    error: BaseException | None = None

    def __post_init__(self) -> None:
        super().__init__(self.port)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._challenged: set[tuple[str, int]] = set()

    @property
    def challenge_header(self) -> str:
        return "Proxy-Authenticate" if self.status == 407 else "WWW-Authenticate"

    @property
    def answer_header(self) -> bytes:
        return b"proxy-authorization" if self.status == 407 else b"authorization"

    def start(self) -> ChallengingCallee:
        self._thread.start()
        return self

    def join(self) -> None:
        self._thread.join(self.timeout + 5)
        assert not self._thread.is_alive(), "challenging callee still running"
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        try:
            self._serve()
        except BaseException as exc:  # reported by join()
            self.error = exc

    def _reply(self, req: Request, addr: tuple[str, int], status: int, reason: str,
               extra: tuple[str, ...] = (), body: bytes = b"") -> None:  # fmt: skip
        head = [f"SIP/2.0 {status} {reason}"]
        for name in (b"via", b"from", b"call-id", b"cseq"):
            for value in req.get_all(name):
                head.append(f"{name.decode().title()}: {value.decode()}")
        to = (req.get(b"to") or b"").decode()
        head.append(to and f"To: {to}" if ";tag=" in to else f"To: {to};tag=callee{self.port}")
        head += [f"Contact: <sip:callee@127.0.0.1:{self.port}>", *extra]
        if body:
            head.append("Content-Type: application/sdp")
        head.append(f"Content-Length: {len(body)}")
        self.send(("\r\n".join(head) + "\r\n\r\n").encode() + body, addr)

    def _sdp(self, offer: bytes) -> bytes:
        direction = "sendrecv"
        if b"a=sendonly" in offer:
            direction = "recvonly"
        elif b"a=inactive" in offer:
            direction = "inactive"
        return (
            "v=0\r\no=- 7 7 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio 41000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na={direction}\r\n"
        ).encode()

    def _serve(self) -> None:
        deadline = time.monotonic() + self.timeout
        answered: dict[tuple[str, int], bytes] = {}  # final responses sent, for resends
        while True:
            got = self.recv(deadline)
            assert got is not None, f"challenging callee: no BYE in {self.timeout} s"
            req, addr = got
            if not isinstance(req, Request):
                continue
            method = req.method.decode()
            if method == "ACK":
                continue
            cseq = req.cseq[0]
            key = (req.call_id.decode(), cseq)
            if key in answered:  # a retransmission
                self.send(answered[key], addr)
                continue
            auth = req.get(self.answer_header)
            problem = (
                check(auth.decode(), method, self.username, self.password, self.realm)
                if auth is not None
                else None
            )
            self.checked.append(Checked(method, cseq, key[0], (req.from_tag or b"").decode(),
                                        None if auth is None else auth.decode(), problem))  # fmt: skip
            before = len(self.sent)
            if auth is None or self.refuse or problem is not None:
                if auth is not None and not self.refuse:
                    self._reply(req, addr, 403, "Forbidden")
                else:
                    nonce = os.urandom(12).hex()
                    self._reply(req, addr, self.status, "Authentication Required", (
                        f'{self.challenge_header}: Digest realm="{self.realm}", '
                        f'nonce="{nonce}", algorithm={self.algorithm}, qop="auth"',))  # fmt: skip
            elif method == "INVITE":
                self._reply(req, addr, 180, "Ringing")
                self._reply(req, addr, 200, "OK", body=self._sdp(req.body))
            else:
                self._reply(req, addr, 200, "OK")
            answered[key] = self.sent[-1] if len(self.sent) > before else b""
            if method == "BYE" and auth is not None and problem is None and not self.refuse:
                return
            invites = sum(c.method == "INVITE" for c in self.checked)
            if self.max_invites is not None and invites >= self.max_invites:
                return
