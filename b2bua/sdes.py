"""SDES (RFC 4568) for legs whose media ansim's relay anchors: what ansim offers and
answers each party, and the keys the relay gets for the leg; sans-IO.

No key crosses between the legs: each party is sent ``a=crypto`` lines ansim builds
itself, with keys it draws for that leg (:func:`media.srtp.new_key`), and the relay
decrypts what a party sends with the key the party announced and encrypts what goes
toward it with ansim's. Each leg is negotiated on its own, so one party may use SRTP
and the other plain RTP.

Per leg, :class:`LegSdes` holds the transport profile written toward the party, ansim's
lines in the last SDP it was sent, and the keys. :func:`receive` takes an SDP section
from the party (an offer or an answer alike): a line answering one of ansim's (same tag
and suite) settles the leg on it; otherwise the party's first usable line, in its order
of preference, is taken and answered with the same tag and suite (ansim keeps its key
for the leg while the suite stays the same, so a re-INVITE that brings the party's new
key re-keys only that direction). A line is usable when its suite is one pylibsrtp
implements (``media.srtp.SUITES``), it has one key of the suite's length, no MKI and no
session parameters. A party that sends no usable line is plain RTP, unless its profile
is ``RTP/SAVP``/``RTP/SAVPF``: that cannot be carried (:class:`SdesError`).

A leg ansim makes the offer to before its party has sent any SDP (the callee) is given
the other party's profile (:func:`mirror`): ``RTP/SAVP`` with a fresh line for every
suite when the caller used SRTP on ``RTP/SAVP``, ``RTP/AVP`` with those lines when the
caller used SRTP on ``RTP/AVP`` (best effort: a callee that answers without a line is
plain RTP), plain ``RTP/AVP`` when the caller offered no keys; a trunk's ``srtp``
setting overrides that for calls to it (``mandatory``, ``optional``, ``off``).
"""

from __future__ import annotations

import base64
import binascii

from media.srtp import OFFER_ORDER, SUITES, LegKeys, new_key

from .sip.sdp import Media
from .sip.sdp_attributes import Attribute, Crypto, CryptoKey

__all__ = ["LegSdes", "SdesError", "crypto_lines", "mirror", "receive", "secure"]


class SdesError(ValueError):
    """A party requires SRTP (``RTP/SAVP``) and offers no keys ansim can use."""


def secure(proto: bytes) -> bool:
    """Whether ``proto`` is an SRTP profile (``RTP/SAVP``, ``RTP/SAVPF``)."""
    return proto.upper().startswith(b"RTP/SAVP")


class LegSdes:
    """One leg's SDES state (see the module docstring)."""

    __slots__ = ("keys", "ours", "proto")

    def __init__(self) -> None:
        self.proto: bytes | None = None  # the profile written toward the party; None: not known
        self.ours: list[Crypto] = []  # ansim's lines in the SDP the party is sent
        self.keys: LegKeys | None = None  # None: plain RTP (or not settled)

    def relay_field(self) -> dict[str, object] | None:
        """The relay ``leg`` command's ``srtp`` field."""
        keys = self.keys
        return None if keys is None else {"suite": keys.suite, "rx": keys.rx, "tx": keys.tx}

    def builder_lines(self) -> tuple[bytes | None, list[Attribute]]:
        """What ``SdpBuilder.srtp`` writes toward the party: the profile and the lines."""
        return self.proto, list(self.ours)


def crypto_lines(media: Media) -> list[Crypto]:
    return [a for a in media.attributes if isinstance(a, Crypto)]


def _key(line: Crypto) -> bytes | None:
    """The master key and salt of a usable line, or None."""
    suite = SUITES.get(line.suite.decode())
    if suite is None or line.params or len(line.keys) != 1 or line.keys[0].mki is not None:
        return None
    text = line.keys[0].key
    try:  # some write the AEAD suites' keys without the base64 padding
        key = base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
    return key if len(key) == suite.key_length else None


def _line(tag: int, suite: str, key: bytes) -> Crypto:
    return Crypto(tag, suite.encode(), [CryptoKey(base64.b64encode(key), b"", None)], [])


def fresh_lines() -> list[Crypto]:
    """ansim's offer: one line per suite it implements, each with a key of its own."""
    return [_line(i, suite, new_key(suite)) for i, suite in enumerate(OFFER_ORDER, 1)]


def receive(state: LegSdes, media: Media) -> LegKeys | None:
    """Take the party's section (offer or answer); the leg's keys (None: plain RTP)."""
    usable = [(line, key) for line in crypto_lines(media) if (key := _key(line)) is not None]
    mine = {line.tag: line for line in state.ours}
    for line, key in usable:
        ours = mine.get(line.tag)
        if ours is not None and ours.suite == line.suite:
            tx = _key(ours)
            state.proto = media.proto
            state.ours = [ours]
            state.keys = LegKeys(line.suite.decode(), key, tx)
            return state.keys
    if usable:
        line, key = usable[0]
        suite = line.suite.decode()
        old = state.keys
        tx = old.tx if old is not None and old.suite == suite and old.tx else new_key(suite)
        state.proto = media.proto
        state.ours = [_line(line.tag, suite, tx)]
        state.keys = LegKeys(suite, key, tx)
        return state.keys
    if secure(media.proto):
        raise SdesError(f"{media.proto.decode()} without a crypto suite ansim implements")
    state.proto = media.proto
    state.ours = []
    state.keys = None
    return None


POLICIES = ("mandatory", "optional", "off")


def mirror(state: LegSdes, other: LegSdes, policy: str | None = None) -> None:
    """Give a leg that has sent no SDP yet ``other``'s profile, with fresh keys when
    ``other`` uses SRTP (see the module docstring), or what ``policy`` (a trunk's
    ``srtp``) says: ``mandatory`` (``RTP/SAVP`` and fresh keys), ``optional``
    (``RTP/AVP`` and fresh keys), ``off`` (plain ``RTP/AVP``); the feedback profile
    (``...F``) follows ``other``'s."""
    proto = other.proto or b"RTP/AVP"
    feedback = proto.upper().endswith(b"F")
    if policy is None:
        srtp = other.keys is not None
        if not srtp and secure(proto):
            proto = b"RTP/AVP" + proto[8:]
    else:
        srtp = policy != "off"
        proto = (b"RTP/SAVP" if policy == "mandatory" else b"RTP/AVP") + (b"F" if feedback else b"")
    state.proto = proto
    state.ours = fresh_lines() if srtp else []
    state.keys = None
