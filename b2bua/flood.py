"""Flood protection for the SIP listeners, sans-IO: who may send how much, checked on
each datagram before it is parsed.

Sources are split in two. *Trusted* ones (the trunks' ``accept_from`` networks and the
configured allow-list) are never limited here: a carrier's surge is the overload
controller's matter (``b2bua.overload``), answered with 503, not dropped. Every other
source has two token buckets, one for requests of any kind and one for INVITEs, and a
source that runs either dry is banned: everything it sends is dropped, at the cost of
one dictionary look-up, until ``ban_seconds`` after the last datagram it sent (a source
that keeps flooding stays banned). Scanners (SIPVicious' ``friendly-scanner``, sipcli,
VaxSIPUserAgent and the like, recognised by a ``bytes.find`` of their names in the
message head) are banned on their first message, and OPTIONS and REGISTER from unknown
sources (the sweeps that map a network) are dropped without an answer.

Nothing is sent to a dropped source: an answer would tell a scanner there is a SIP
server here, and would let a spoofed flood aim ansim's replies at someone else.

``FloodGuard.check(data, host, now)`` returns 0 (pass) or the reason code of the drop;
time is passed in and nothing here reads a clock or touches a socket. The tables are
bounded (``max_sources``): when full, the oldest entry makes room.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

PASS = 0
BANNED = 1  # the source is banned
RATE = 2  # over its request bucket: banned now
CALLS = 3  # over its INVITE bucket: banned now
SCANNER = 4  # a scanner's fingerprint: banned now
PROBE = 5  # OPTIONS or REGISTER from an unknown source: dropped, not banned

#: Reason code -> the label used in metrics and logs.
REASONS: dict[int, str] = {
    BANNED: "banned",
    RATE: "rate",
    CALLS: "calls",
    SCANNER: "scanner",
    PROBE: "probe",
}

#: User-Agent values (and tool names in From) of SIP scanners and war-diallers, lower case.
SCANNERS: tuple[str, ...] = (
    "friendly-scanner",
    "sipvicious",
    "sipcli",
    "vaxsipuseragent",
    "sip-scan",
    "sipscan",
    "sundayddr",
    "iwar",
    "sivus",
    "siparmyknife",
    "smap",
    "pplsip",
    "voipbuster",
)

_INVITE = b"INVITE "
_PROBES = (b"OPTIONS ", b"REGISTER ")


@dataclass(frozen=True, slots=True)
class FloodLimits:
    """Limits for untrusted sources: ``count`` per ``seconds`` (bucket size and refill)."""

    requests: int = 16
    requests_seconds: float = 2.0
    calls: int = 4
    calls_seconds: float = 2.0
    ban_seconds: float = 600.0
    scanners: tuple[str, ...] = SCANNERS
    drop_probes: bool = True
    max_sources: int = 100_000


class _Source:
    """The buckets of one untrusted source (tokens and when they were last filled)."""

    __slots__ = ("call_tokens", "last", "tokens")

    def __init__(self, tokens: float, call_tokens: float, now: float) -> None:
        self.tokens = tokens
        self.call_tokens = call_tokens
        self.last = now


class FloodGuard:
    """Per-source limits, the ban list and scanner fingerprints of one engine."""

    def __init__(self, limits: FloodLimits, trusted: Iterable[str]) -> None:
        self.limits = limits
        self._nets = [ipaddress.ip_network(n, strict=False) for n in trusted]
        self._trusted: dict[str, bool] = {}
        self._sources: dict[str, _Source] = {}
        #: host -> monotonic time its ban ends
        self.banned: dict[str, float] = {}
        self._burst = float(limits.requests)
        self._rate = limits.requests / limits.requests_seconds
        self._call_burst = float(limits.calls)
        self._call_rate = limits.calls / limits.calls_seconds
        self._ban = limits.ban_seconds
        self._fingerprints = tuple(s.lower().encode() for s in limits.scanners)
        self._drop_probes = limits.drop_probes
        self._max = limits.max_sources
        #: reason code -> datagrams dropped
        self.dropped: dict[int, int] = {}
        #: reason code -> bans started
        self.bans: dict[int, int] = {}
        #: (host, reason code) of bans started since ``take_new_bans`` (bounded)
        self.new_bans: list[tuple[str, int]] = []
        self.new_bans_lost = 0

    # -- the check --------------------------------------------------------------------------
    def is_trusted(self, host: str) -> bool:
        trusted = self._trusted.get(host)
        if trusted is None:
            trusted = self._classify(host)
        return trusted

    def _classify(self, host: str) -> bool:
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            found = False
        else:
            found = any(addr in net for net in self._nets)
        cache = self._trusted
        if len(cache) >= self._max:
            cache.clear()
        cache[host] = found
        return found

    def check(self, data: bytes, host: str, now: float) -> int:
        """PASS, or why the datagram ``data`` from ``host`` is to be dropped."""
        trusted = self._trusted.get(host)
        if trusted is None:
            trusted = self._classify(host)
        if trusted:
            return PASS
        return self._check_untrusted(data, host, now)

    def check_message(self, head: bytes, host: str, now: float) -> int:
        """``check`` for a message framed from a stream (``head``: its start line and
        header lines as received)."""
        if self.is_trusted(host):
            return PASS
        return self._check_untrusted(head, host, now)

    def is_banned(self, host: str, now: float) -> bool:
        """Whether ``host`` is banned now (a new connection from it is refused)."""
        until = self.banned.get(host)
        return until is not None and now < until

    def _check_untrusted(self, data: bytes, host: str, now: float) -> int:
        banned = self.banned
        until = banned.get(host)
        if until is not None:
            if now < until:
                banned[host] = now + self._ban  # still sending: the ban goes on
                return self._drop(BANNED)
            del banned[host]
        end = data.find(b"\r\n\r\n")
        head = (data if end < 0 else data[:end]).lower()
        for fingerprint in self._fingerprints:
            if head.find(fingerprint) >= 0:
                return self._ban_now(host, now, SCANNER)
        src = self._sources.get(host)
        if src is None:
            src = self._new_source(host, now)
        else:
            elapsed = now - src.last
            if elapsed > 0:
                src.tokens = min(self._burst, src.tokens + elapsed * self._rate)
                src.call_tokens = min(self._call_burst, src.call_tokens + elapsed * self._call_rate)
                src.last = now
        if src.tokens < 1.0:
            return self._ban_now(host, now, RATE)
        src.tokens -= 1.0
        if data.startswith(_INVITE):
            if src.call_tokens < 1.0:
                return self._ban_now(host, now, CALLS)
            src.call_tokens -= 1.0
        elif self._drop_probes and data.startswith(_PROBES):
            return self._drop(PROBE)
        return PASS

    def _new_source(self, host: str, now: float) -> _Source:
        sources = self._sources
        if len(sources) >= self._max:
            del sources[next(iter(sources))]
        src = sources[host] = _Source(self._burst, self._call_burst, now)
        return src

    def _drop(self, reason: int) -> int:
        dropped = self.dropped
        dropped[reason] = dropped.get(reason, 0) + 1
        return reason

    def _ban_now(self, host: str, now: float, reason: int) -> int:
        banned = self.banned
        if len(banned) >= self._max:
            del banned[next(iter(banned))]
        banned[host] = now + self._ban
        self._sources.pop(host, None)
        bans = self.bans
        bans[reason] = bans.get(reason, 0) + 1
        if len(self.new_bans) < 100:
            self.new_bans.append((host, reason))
        else:
            self.new_bans_lost += 1
        return self._drop(reason)

    # -- housekeeping -------------------------------------------------------------------------
    def expire(self, now: float) -> None:
        """Forget ended bans and the buckets of sources that have been quiet long enough
        to be full again (call it about once a second)."""
        banned = self.banned
        for host in [h for h, until in banned.items() if until <= now]:
            del banned[host]
        quiet = max(self.limits.requests_seconds, self.limits.calls_seconds)
        sources = self._sources
        for host in [h for h, s in sources.items() if now - s.last >= quiet]:
            del sources[host]

    def take_new_bans(self) -> tuple[list[tuple[str, int]], int]:
        """The bans started since the last call (at most 100) and how many more there were."""
        bans, lost = self.new_bans, self.new_bans_lost
        self.new_bans = []
        self.new_bans_lost = 0
        return bans, lost

    def sources(self) -> int:
        """Untrusted sources with live buckets."""
        return len(self._sources)
