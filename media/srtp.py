"""SRTP on the relay's legs (RFC 3711): the suites ansim carries, fresh keys, and one
leg's two crypto contexts; sans-IO, on pylibsrtp (the libsrtp binding aiortc uses).

A leg whose party negotiated SDES keys (``a=crypto``, RFC 4568) holds a
:class:`SrtpLeg`: packets from the party are authenticated and decrypted with the key
the party announced (``rx``), and packets toward it are encrypted with a key ansim drew
for that leg alone (``tx``), so the relay handles plain RTP between the two and no key
of one party ever reaches the other. SRTCP likewise, with the same master keys.

A packet that fails authentication, or that repeats or is older than the replay window
(libsrtp's 128 packets), is dropped and counted (``auth_failures``, ``replays``).
Packets toward the party may repeat a sequence number (the last packets of an RFC 4733
event are sent three times), so the outbound context allows it.

Keys travel between the engine and the relay as raw bytes (master key then master
salt, as the SDES ``inline:`` value is their base64); :func:`parse_keys` checks them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, NamedTuple

from pylibsrtp import Error, Policy, Session

__all__ = [
    "OFFER_ORDER",
    "SUITES",
    "LegKeys",
    "SrtpLeg",
    "Suite",
    "new_key",
    "parse_keys",
]


@dataclass(frozen=True, slots=True)
class Suite:
    """One SDES crypto suite and the libsrtp profile that implements it."""

    name: str
    profile: int
    key_length: int  # master key and master salt together, in bytes


# The suites pylibsrtp implements (RFC 4568 §6.2, RFC 7714 §12), in the order ansim
# offers them: the one every SDES implementation has first.
SUITES: dict[str, Suite] = {
    s.name: s
    for s in (
        Suite("AES_CM_128_HMAC_SHA1_80", Policy.SRTP_PROFILE_AES128_CM_SHA1_80, 30),
        Suite("AES_CM_128_HMAC_SHA1_32", Policy.SRTP_PROFILE_AES128_CM_SHA1_32, 30),
        Suite("AEAD_AES_256_GCM", Policy.SRTP_PROFILE_AEAD_AES_256_GCM, 44),
        Suite("AEAD_AES_128_GCM", Policy.SRTP_PROFILE_AEAD_AES_128_GCM, 28),
    )
}
OFFER_ORDER = tuple(SUITES)


def new_key(suite: str) -> bytes:
    """A fresh master key and salt for ``suite``."""
    return os.urandom(SUITES[suite].key_length)


class LegKeys(NamedTuple):
    """A leg's suite, the party's key (what it sends), ansim's key (what it is sent);
    a key not known yet is None (nothing is decrypted, or sent, until it is)."""

    suite: str
    rx: bytes | None
    tx: bytes | None


def parse_keys(value: Any) -> LegKeys | None:
    """The ``srtp`` field of a relay ``leg`` command: null (plain RTP) or
    ``{"suite", "rx", "tx"}``; ValueError says what is wrong."""
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - {"suite", "rx", "tx"}:
        raise ValueError("srtp must be null or {suite, rx, tx}")
    suite = SUITES.get(value.get("suite"))  # type: ignore[arg-type]
    if suite is None:
        raise ValueError(f"srtp suite must be one of {', '.join(SUITES)}")
    keys = []
    for name in ("rx", "tx"):
        key = value.get(name)
        if key is not None and (not isinstance(key, bytes) or len(key) != suite.key_length):
            raise ValueError(f"srtp {name} must be {suite.key_length} bytes for {suite.name}")
        keys.append(key)
    return LegKeys(suite.name, keys[0], keys[1])


def _session(suite: str, key: bytes, inbound: bool) -> Session:
    ssrc = Policy.SSRC_ANY_INBOUND if inbound else Policy.SSRC_ANY_OUTBOUND
    policy = Policy(key=key, ssrc_type=ssrc, srtp_profile=SUITES[suite].profile)
    if not inbound:
        policy.allow_repeat_tx = True
    return Session(policy)


class SrtpLeg:
    """The crypto contexts of one leg: ``rx`` (from the party), ``tx`` (toward it)."""

    __slots__ = ("auth_failures", "keys", "replays", "rx", "tx", "tx_errors")

    def __init__(self, keys: LegKeys) -> None:
        self.keys = LegKeys(keys.suite, None, None)
        self.rx: Session | None = None
        self.tx: Session | None = None
        self.auth_failures = 0
        self.replays = 0
        self.tx_errors = 0
        self.update(keys)

    def update(self, keys: LegKeys) -> bool:
        """Take ``keys``; a context whose key (or suite) changed starts afresh (a
        re-key), one whose key did not keeps its replay window and rollover counter.
        Whether anything changed."""
        old = self.keys
        same_suite = keys.suite == old.suite
        changed = False
        if keys.rx != old.rx or not same_suite:
            self.rx = _session(keys.suite, keys.rx, True) if keys.rx is not None else None
            changed = True
        if keys.tx != old.tx or not same_suite:
            self.tx = _session(keys.suite, keys.tx, False) if keys.tx is not None else None
            changed = True
        self.keys = keys
        return changed

    def _failed(self, exc: Error) -> None:
        if str(exc).startswith("replay"):
            self.replays += 1
        else:
            self.auth_failures += 1

    def unprotect(self, packet: bytes) -> bytes | None:
        """The RTP packet an SRTP packet from the party holds; None (counted) when it
        fails authentication or the replay check."""
        rx = self.rx
        if rx is None:
            return None
        try:
            return rx.unprotect(packet)
        except Error as exc:
            self._failed(exc)
            return None

    def unprotect_rtcp(self, packet: bytes) -> bytes | None:
        rx = self.rx
        if rx is None:
            return None
        try:
            return rx.unprotect_rtcp(packet)
        except Error as exc:
            self._failed(exc)
            return None

    def protect(self, packet: bytes) -> bytes | None:
        """The SRTP packet to send the party; None (counted) when libsrtp refuses it."""
        tx = self.tx
        if tx is None:
            return None
        try:
            return tx.protect(packet)
        except (Error, ValueError):
            self.tx_errors += 1
            return None

    def protect_rtcp(self, packet: bytes) -> bytes | None:
        tx = self.tx
        if tx is None:
            return None
        try:
            return tx.protect_rtcp(packet)
        except (Error, ValueError):
            self.tx_errors += 1
            return None
