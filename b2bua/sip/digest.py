"""Digest access authentication for SIP (RFC 3261 §22 with RFC 7616 semantics and the
algorithms of RFC 8760), sans-IO.

Both sides live here:

- **Server** (``DigestServer``): challenges (``WWW-Authenticate`` or
  ``Proxy-Authenticate`` values) carrying a *stateless* nonce, and the verification of
  the credentials a client answers with. The nonce holds the time it was made, a
  counter and an HMAC over both and the realm with a key of the server's own, so no
  state is kept for a challenge nobody answers; a nonce older than ``lifetime`` whose
  HMAC is valid is *stale* (the client is challenged again with ``stale=true`` and
  retries without asking anyone for a password). Replays are refused by nonce-count
  tracking: the highest ``nc`` seen for each nonce in use is kept (bounded), and a
  request whose ``nc`` is not above it is a replay. ``qop=auth`` is required (RFC
  7616), since only it carries ``nc``.
- **Client** (``answer``): the ``Authorization`` / ``Proxy-Authorization`` value for a
  challenge, with the client nonce and count passed in.

Algorithms: ``MD5``, ``SHA-256`` and ``SHA-512-256``, each also as ``-sess``
(RFC 7616 §3.4.2). ``userhash`` is not supported: it is never offered, and a client
using it is refused as malformed. Nothing here reads a clock or draws random numbers:
the time, the server's key and the client's nonce are passed in.

Written here rather than taken from a library because the SIP core is ansim's own and
the HTTP libraries' digest code is tied to their request objects (and is client-only).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Final

__all__ = [
    "ALGORITHMS",
    "Challenge",
    "Credentials",
    "DigestError",
    "DigestServer",
    "Outcome",
    "answer",
    "best_challenge",
    "digest_response",
    "ha1",
    "parse_challenge",
    "parse_credentials",
]


def _hasher(name: str) -> Callable[[bytes], str]:
    def h(data: bytes) -> str:
        return hashlib.new(name, data).hexdigest()

    return h


#: Base algorithm name (upper case) -> hex digest function. The ``-sess`` variants use the
#: same function (see ``ha1``).
ALGORITHMS: Final[dict[str, Callable[[bytes], str]]] = {
    "MD5": _hasher("md5"),
    "SHA-256": _hasher("sha256"),
    "SHA-512-256": _hasher("sha512_256"),
}
#: Client preference when several challenges are offered: the strongest first.
_STRENGTH: Final = {"SHA-512-256": 3, "SHA-256": 2, "MD5": 1}


class DigestError(ValueError):
    """A challenge or credentials header that cannot be read."""


def _base(algorithm: str) -> tuple[str, bool]:
    """(base algorithm, is -sess) of an algorithm token; DigestError if unknown."""
    name = algorithm.upper()
    sess = name.endswith("-SESS")
    if sess:
        name = name[:-5]
    if name not in ALGORITHMS:
        raise DigestError(f"unsupported algorithm {algorithm!r}")
    return name, sess


# -- header values --------------------------------------------------------------------------


def _params(value: bytes) -> dict[str, str]:
    """``Digest k=v, k="v", ...`` as {lower-case key: unquoted value}; DigestError if the
    scheme is not Digest or a parameter cannot be read."""
    text = value.decode("utf-8", errors="strict") if value else ""
    text = text.strip()
    scheme, _, rest = text.partition(" ")
    if scheme.lower() != "digest":
        raise DigestError(f"not a Digest challenge or credentials: {scheme!r}")
    out: dict[str, str] = {}
    i, n = 0, len(rest)
    while i < n:
        while i < n and rest[i] in " \t,":
            i += 1
        if i >= n:
            break
        eq = rest.find("=", i)
        if eq < 0:
            raise DigestError("parameter without a value")
        key = rest[i:eq].strip().lower()
        if not key or any(c in key for c in ' \t",'):
            raise DigestError("bad parameter name")
        i = eq + 1
        while i < n and rest[i] in " \t":
            i += 1
        if i < n and rest[i] == '"':
            i += 1
            chars: list[str] = []
            while True:
                if i >= n:
                    raise DigestError("unterminated quoted string")
                c = rest[i]
                if c == "\\" and i + 1 < n:
                    chars.append(rest[i + 1])
                    i += 2
                    continue
                if c == '"':
                    i += 1
                    break
                chars.append(c)
                i += 1
            val = "".join(chars)
        else:
            j = rest.find(",", i)
            j = n if j < 0 else j
            val = rest[i:j].strip()
            i = j
        if key in out:
            raise DigestError(f"parameter {key!r} given twice")
        out[key] = val
    return out


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True, slots=True)
class Challenge:
    """One Digest challenge (a ``WWW-Authenticate`` or ``Proxy-Authenticate`` value)."""

    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ()
    opaque: str | None = None
    stale: bool = False

    def header_value(self) -> bytes:
        parts = [f"realm={_quote(self.realm)}", f"nonce={_quote(self.nonce)}"]
        if self.opaque is not None:
            parts.append(f"opaque={_quote(self.opaque)}")
        if self.stale:
            parts.append("stale=true")
        parts.append(f"algorithm={self.algorithm}")
        if self.qop:
            parts.append(f"qop={_quote(','.join(self.qop))}")
        return ("Digest " + ", ".join(parts)).encode()


def parse_challenge(value: bytes) -> Challenge:
    """A challenge header value; DigestError when it is not a usable Digest challenge."""
    p = _params(value)
    if "realm" not in p or "nonce" not in p:
        raise DigestError("challenge without realm or nonce")
    algorithm = p.get("algorithm", "MD5")
    _base(algorithm)
    qop = tuple(q.strip().lower() for q in p.get("qop", "").split(",") if q.strip())
    return Challenge(
        realm=p["realm"],
        nonce=p["nonce"],
        algorithm=algorithm,
        qop=qop,
        opaque=p.get("opaque"),
        stale=p.get("stale", "").lower() == "true",
    )


def best_challenge(values: list[bytes], realm: str | None = None) -> Challenge | None:
    """The challenge a client should answer among ``values`` (every challenge header of a
    401 or 407): Digest with an algorithm ansim knows, of ``realm`` when given, the
    strongest algorithm first (RFC 8760 §3), then the server's order; None if none."""
    best: Challenge | None = None
    rank = 0
    for value in values:
        try:
            c = parse_challenge(value)
        except DigestError:
            continue
        if realm is not None and c.realm != realm:
            continue
        if c.qop and "auth" not in c.qop and "auth-int" not in c.qop:
            continue
        r = _STRENGTH[_base(c.algorithm)[0]]
        if r > rank:
            best, rank = c, r
    return best


@dataclass(frozen=True, slots=True)
class Credentials:
    """Digest credentials (an ``Authorization`` or ``Proxy-Authorization`` value)."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    cnonce: str | None = None
    opaque: str | None = None
    qop: str | None = None
    nc: str | None = None
    userhash: bool = False

    def header_value(self) -> bytes:
        parts = [
            f"username={_quote(self.username)}",
            f"realm={_quote(self.realm)}",
            f"nonce={_quote(self.nonce)}",
            f"uri={_quote(self.uri)}",
            f"response={_quote(self.response)}",
            f"algorithm={self.algorithm}",
        ]
        if self.cnonce is not None:
            parts.append(f"cnonce={_quote(self.cnonce)}")
        if self.opaque is not None:
            parts.append(f"opaque={_quote(self.opaque)}")
        if self.qop is not None:
            parts.append(f"qop={self.qop}")
        if self.nc is not None:
            parts.append(f"nc={self.nc}")
        return ("Digest " + ", ".join(parts)).encode()


def parse_credentials(value: bytes) -> Credentials:
    """A credentials header value; DigestError when it cannot be read."""
    try:
        p = _params(value)
    except UnicodeDecodeError as exc:
        raise DigestError("credentials are not UTF-8") from exc
    for key in ("username", "realm", "nonce", "uri", "response"):
        if key not in p:
            raise DigestError(f"credentials without {key}")
    return Credentials(
        username=p["username"],
        realm=p["realm"],
        nonce=p["nonce"],
        uri=p["uri"],
        response=p["response"].lower(),
        algorithm=p.get("algorithm", "MD5"),
        cnonce=p.get("cnonce"),
        opaque=p.get("opaque"),
        qop=p["qop"].lower() if "qop" in p else None,
        nc=p.get("nc"),
        userhash=p.get("userhash", "").lower() == "true",
    )


# -- the computation (RFC 7616 §3.4.1) ----------------------------------------------------


def ha1(algorithm: str, username: str, realm: str, password: str) -> str:
    """H(username ":" realm ":" password) for ``algorithm`` (the base one for -sess: the
    session part needs the nonces, see ``digest_response``)."""
    name, _ = _base(algorithm)
    return ALGORITHMS[name](f"{username}:{realm}:{password}".encode())


def digest_response(
    algorithm: str,
    ha1_hex: str,
    nonce: str,
    method: str,
    uri: str,
    *,
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
    body: bytes = b"",
) -> str:
    """The ``response`` value: KD(H(A1), nonce:nc:cnonce:qop:H(A2)), or RFC 2069's
    KD(H(A1), nonce:H(A2)) without qop. ``ha1_hex`` is ``ha1(...)``; for a -sess
    algorithm it is turned into H(H(user:realm:pw):nonce:cnonce) here."""
    name, sess = _base(algorithm)
    h = ALGORITHMS[name]
    if sess:
        ha1_hex = h(f"{ha1_hex}:{nonce}:{cnonce or ''}".encode())
    a2 = f"{method}:{uri}"
    if qop == "auth-int":
        a2 += ":" + h(body)
    ha2 = h(a2.encode())
    if qop is None:
        return h(f"{ha1_hex}:{nonce}:{ha2}".encode())
    return h(f"{ha1_hex}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}".encode())


def answer(
    challenge: Challenge,
    username: str,
    password: str,
    method: str,
    uri: str,
    cnonce: str,
    nc: int = 1,
    body: bytes = b"",
) -> Credentials:
    """The credentials answering ``challenge`` for a request ``method uri`` (with ``body``
    for qop=auth-int): qop=auth when offered, else auth-int, else none (RFC 2069)."""
    qop: str | None = None
    if challenge.qop:
        qop = "auth" if "auth" in challenge.qop else "auth-int"
    nc_text = f"{nc:08x}" if qop else None
    response = digest_response(
        challenge.algorithm,
        ha1(challenge.algorithm, username, challenge.realm, password),
        challenge.nonce,
        method,
        uri,
        qop=qop,
        nc=nc_text,
        cnonce=cnonce if qop or challenge.algorithm.upper().endswith("-SESS") else None,
        body=body,
    )
    return Credentials(
        username=username,
        realm=challenge.realm,
        nonce=challenge.nonce,
        uri=uri,
        response=response,
        algorithm=challenge.algorithm,
        cnonce=cnonce if qop else None,
        opaque=challenge.opaque,
        qop=qop,
        nc=nc_text,
    )


# -- the server ---------------------------------------------------------------------------


class Outcome(Enum):
    """What ``DigestServer.verify`` decided."""

    OK = "ok"
    STALE = "stale"  # ours, older than the lifetime: challenge again with stale=true
    UNKNOWN_NONCE = "unknown_nonce"  # not made by this server (or its key changed)
    REPLAY = "replay"  # nc not above the highest seen for this nonce
    WRONG = "wrong"  # the response does not match: wrong password (or user)
    MALFORMED = "malformed"  # unusable: no qop=auth, an algorithm not offered, ...


_NONCE: Final = struct.Struct(">QI")  # milliseconds, counter
_MAC_BYTES: Final = 12
_NONCE_BYTES: Final = _NONCE.size + _MAC_BYTES


class DigestServer:
    """Issues challenges and verifies the answers, for any number of realms.

    ``key`` authenticates the nonces this server makes (random per process: a nonce of
    another process or of before a restart is unknown, and its sender is challenged
    again). Times are seconds on any clock, as long as it is the same one throughout.
    At most ``max_tracked`` nonces are followed for replays; past that the oldest are
    forgotten, and a forgotten nonce still within its lifetime answers stale, so a
    forgotten count never lets a replay through.
    """

    def __init__(self, key: bytes, lifetime: float = 300.0, max_tracked: int = 100_000) -> None:
        self._key = key
        self.lifetime = lifetime
        self.max_tracked = max_tracked
        self._counter = 0
        # nonce -> (made at, highest nc seen), in order of first use
        self._seen: dict[str, tuple[float, int]] = {}
        # Nonces made at or before this time may have had their count forgotten (_prune).
        self._horizon = float("-inf")

    def nonce(self, realm: str, now: float) -> str:
        self._counter = (self._counter + 1) & 0xFFFFFFFF
        payload = _NONCE.pack(int(now * 1000), self._counter)
        return base64.urlsafe_b64encode(payload + self._mac(payload, realm)).decode()

    def _mac(self, payload: bytes, realm: str) -> bytes:
        return hmac.new(self._key, payload + realm.encode(), hashlib.sha256).digest()[:_MAC_BYTES]

    def challenges(
        self, realm: str, algorithms: tuple[str, ...], now: float, stale: bool = False
    ) -> list[bytes]:
        """One challenge value per algorithm, in the order given (the server's preference),
        all with one fresh nonce and qop=auth."""
        nonce = self.nonce(realm, now)
        return [
            Challenge(realm, nonce, a, ("auth",), None, stale).header_value() for a in algorithms
        ]

    def _made_at(self, nonce: str, realm: str) -> float | None:
        """When this server made ``nonce`` for ``realm``; None if it did not."""
        try:
            raw = base64.urlsafe_b64decode(nonce.encode())
        except (ValueError, TypeError):
            return None
        if len(raw) != _NONCE_BYTES:
            return None
        payload, mac = raw[: _NONCE.size], raw[_NONCE.size :]
        if not hmac.compare_digest(mac, self._mac(payload, realm)):
            return None
        return float(_NONCE.unpack(payload)[0]) / 1000

    def verify(
        self,
        creds: Credentials,
        method: str,
        uri: str | Callable[[str], bool],
        realm: str,
        algorithms: tuple[str, ...],
        ha1_of: Callable[[str], str | None],
        now: float,
    ) -> Outcome:
        """Check ``creds`` sent with a request ``method`` for ``uri`` in ``realm``.

        ``uri`` is the Request-URI the credentials' ``uri`` must equal, or a test of it
        (clients differ in what they write there; the response is computed over what
        they wrote either way). ``ha1_of(algorithm)`` gives H(username:realm:password)
        of the user the credentials name, in that (base) algorithm, or None when there is
        no such user (answered as WRONG, like a wrong password, so users cannot be
        probed). A request that passes has its ``nc`` recorded: the same nc again is a
        REPLAY.
        """
        if creds.userhash or creds.realm != realm:
            return Outcome.MALFORMED
        if creds.algorithm.upper() not in (a.upper() for a in algorithms):
            return Outcome.MALFORMED
        if creds.qop != "auth" or creds.cnonce is None or creds.nc is None:
            return Outcome.MALFORMED
        if len(creds.nc) != 8:
            return Outcome.MALFORMED
        try:
            nc = int(creds.nc, 16)
        except ValueError:
            return Outcome.MALFORMED
        if not (uri(creds.uri) if callable(uri) else creds.uri == uri):
            return Outcome.MALFORMED
        made = self._made_at(creds.nonce, realm)
        if made is None:
            return Outcome.UNKNOWN_NONCE
        h1 = ha1_of(_base(creds.algorithm)[0])
        expected = (
            digest_response(
                creds.algorithm,
                h1,
                creds.nonce,
                method,
                creds.uri,
                qop="auth",
                nc=creds.nc,
                cnonce=creds.cnonce,
            )
            if h1 is not None
            else ""
        )
        if not h1 or not hmac.compare_digest(expected, creds.response):
            return Outcome.WRONG
        if now - made > self.lifetime:
            return Outcome.STALE
        seen = self._seen.get(creds.nonce)
        if seen is not None:
            if nc <= seen[1]:
                return Outcome.REPLAY
        elif made <= self._horizon:
            # Its count may have been forgotten to make room: only a fresh nonce is safe.
            return Outcome.STALE
        self._seen[creds.nonce] = (made, nc)
        if len(self._seen) > self.max_tracked:
            self._prune(now)
        return Outcome.OK

    def _prune(self, now: float) -> None:
        """Make room: counts of expired nonces go first, then the oldest in use, whose
        nonces are stale from then on (``_horizon``)."""
        self.forget_expired(now)
        seen = self._seen
        excess = len(seen) - self.max_tracked // 2
        if excess <= 0:
            return
        for nonce in list(seen)[:excess]:
            made, _ = seen.pop(nonce)
            self._horizon = max(self._horizon, made)

    def tracked(self) -> int:
        """Nonces followed for replays now."""
        return len(self._seen)

    def forget_expired(self, now: float) -> None:
        """Drop the counts of nonces past their lifetime (any use of them is stale)."""
        seen = self._seen
        for nonce in [n for n, (made, _) in seen.items() if now - made > self.lifetime]:
            del seen[nonce]
