"""Who may bind to ansim: credentials from config, compared in constant time, and a
per-address limit on bind attempts so that passwords cannot be guessed at line rate."""

from __future__ import annotations

import hashlib
import hmac

from .config import Account
from .pdu import Bind, Cmd, Status

_BIND_TYPE = {
    Cmd.BIND_TRANSMITTER: "transmitter",
    Cmd.BIND_RECEIVER: "receiver",
    Cmd.BIND_TRANSCEIVER: "transceiver",
}


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("latin-1")).digest()


class BindGuard:
    """Decides bind requests: rate limit per remote address, then credentials, then limits."""

    def __init__(self, accounts: list[Account], burst: int, rate: float) -> None:
        self._accounts = {a.system_id: a for a in accounts}
        self._digests = {a.system_id: _digest(a.password) for a in accounts}
        self._unknown = _digest("\0unknown account\0")
        self._burst = float(burst)
        self._rate = rate
        self._buckets: dict[str, tuple[float, float]] = {}  # address -> (tokens, at)
        self.binds: dict[str, int] = {}

    def _take_token(self, address: str, now: float) -> bool:
        tokens, at = self._buckets.get(address, (self._burst, now))
        tokens = min(self._burst, tokens + (now - at) * self._rate)
        if tokens < 1.0:
            self._buckets[address] = (tokens, now)
            return False
        self._buckets[address] = (tokens - 1.0, now)
        if len(self._buckets) > 10_000:  # forget full buckets of addresses long idle
            full = [
                k
                for k, (t, a) in self._buckets.items()
                if t + (now - a) * self._rate >= self._burst
            ]
            for k in full:
                del self._buckets[k]
        return True

    def check(self, bind: Bind, address: str, now: float) -> tuple[int, Account | None, str]:
        """(status, account, reason): status 0 accepts the bind for that account."""
        if not self._take_token(address, now):
            return Status.RBINDFAIL, None, "too many bind attempts"
        expected = self._digests.get(bind.system_id, self._unknown)
        password_ok = hmac.compare_digest(_digest(bind.password), expected)
        account = self._accounts.get(bind.system_id)
        if account is None or not password_ok:
            return Status.RBINDFAIL, None, "wrong credentials"
        if _BIND_TYPE[bind.command_id] not in account.bind_types:
            return Status.RBINDFAIL, None, "bind type not allowed"
        if self.binds.get(account.system_id, 0) >= account.max_binds:
            return Status.RBINDFAIL, None, "max_binds reached"
        return Status.ROK, account, ""

    def check_invalid(self, status: int, address: str, now: float) -> tuple[int, str]:
        """(status, reason) for a bind that could not be decoded: it takes a token too."""
        if not self._take_token(address, now):
            return Status.RBINDFAIL, "too many bind attempts"
        return status, "malformed bind"

    def count_attempt(self, address: str, now: float) -> None:
        """A bind refused by the session itself (already bound): it takes a token too."""
        self._take_token(address, now)

    def bound(self, system_id: str) -> None:
        self.binds[system_id] = self.binds.get(system_id, 0) + 1

    def unbound(self, system_id: str) -> None:
        n = self.binds.get(system_id, 0) - 1
        if n > 0:
            self.binds[system_id] = n
        else:
            self.binds.pop(system_id, None)
