"""SDES negotiation per anchored leg (``b2bua.sdes``) and the SDP it writes: the suite
taken from an offer, ansim's own keys in its offers and answers, answers matched to
ansim's lines, re-offers that keep or change keys, plain and best-effort legs, and an
``RTP/SAVP`` offer ansim cannot carry."""

from __future__ import annotations

import base64

import pytest

from b2bua.sdes import LegSdes, SdesError, fresh_lines, mirror, receive
from b2bua.sip.sdp import Media, MediaTarget, SdpBuilder, parse_sdp
from b2bua.sip.sdp_attributes import Crypto
from media.srtp import OFFER_ORDER, SUITES

K30 = [base64.b64encode(bytes([i]) * 30).decode() for i in range(1, 5)]
K44 = base64.b64encode(b"\x07" * 44).decode()


def section(proto: str, *cryptos: str) -> bytes:
    lines = "".join(f"a=crypto:{c}\r\n" for c in cryptos)
    return (
        f"v=0\r\no=a 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\n"
        f"m=audio 4000 {proto} 0 101\r\na=rtpmap:101 telephone-event/8000\r\n{lines}"
    ).encode()


def media(proto: str, *cryptos: str) -> Media:
    return parse_sdp(section(proto, *cryptos)).media[0]


def key(line: Crypto) -> bytes:
    return base64.b64decode(line.keys[0].key)


def test_an_offer_is_answered_with_its_first_usable_suite_and_a_key_of_ansims() -> None:
    state = LegSdes()
    keys = receive(
        state,
        media(
            "RTP/SAVP",
            f"1 F8_128_HMAC_SHA1_80 inline:{K30[0]}",  # not implemented by pylibsrtp
            f"2 AES_CM_128_HMAC_SHA1_80 inline:{K30[1]}|2^20|1:4",  # an MKI
            f"3 AES_CM_128_HMAC_SHA1_32 inline:{K30[2]} UNENCRYPTED_SRTCP",  # a parameter
            f"4 AEAD_AES_128_GCM inline:{K30[3]}",  # 30 bytes: not GCM-128's 28
            f"5 AEAD_AES_256_GCM inline:{K44}",
            f"6 AES_CM_128_HMAC_SHA1_80 inline:{K30[0]}",
        ),
    )
    assert keys is not None and keys.suite == "AEAD_AES_256_GCM"
    assert keys.rx == b"\x07" * 44 and keys.tx is not None and len(keys.tx) == 44
    assert keys.tx != keys.rx
    assert state.proto == b"RTP/SAVP"
    [line] = state.ours
    assert (line.tag, line.suite, key(line)) == (5, b"AEAD_AES_256_GCM", keys.tx)
    assert state.relay_field() == {"suite": "AEAD_AES_256_GCM", "rx": keys.rx, "tx": keys.tx}


def test_a_key_written_without_base64_padding_is_read() -> None:
    unpadded = base64.b64encode(b"\x05" * 28).decode().rstrip("=")
    keys = receive(LegSdes(), media("RTP/SAVP", f"1 AEAD_AES_128_GCM inline:{unpadded}"))
    assert keys is not None and keys.rx == b"\x05" * 28


def test_the_other_leg_is_offered_fresh_keys_on_the_same_profile_and_its_answer_settles_it() -> (
    None
):
    a, b = LegSdes(), LegSdes()
    receive(a, media("RTP/SAVPF", f"1 AES_CM_128_HMAC_SHA1_80 inline:{K30[0]}"))
    mirror(b, a)
    assert b.proto == b"RTP/SAVPF" and b.keys is None
    assert [(c.tag, c.suite.decode()) for c in b.ours] == list(enumerate(OFFER_ORDER, 1))
    offered = [key(c) for c in b.ours]
    assert len(set(offered)) == len(offered) and a.keys is not None
    assert a.keys.rx not in offered and a.keys.tx not in offered
    assert all(
        len(k) == SUITES[c.suite.decode()].key_length for k, c in zip(offered, b.ours, strict=True)
    )
    # B answers tag 2 (AES_CM_128_HMAC_SHA1_32) with its own key.
    keys = receive(b, media("RTP/SAVPF", f"2 AES_CM_128_HMAC_SHA1_32 inline:{K30[3]}"))
    assert keys is not None
    assert (keys.suite, keys.rx, keys.tx) == (
        "AES_CM_128_HMAC_SHA1_32",
        bytes([4]) * 30,
        offered[1],
    )
    assert [c.tag for c in b.ours] == [2]


def test_reoffers_keep_ansims_key_and_take_the_partys_new_one() -> None:
    a = LegSdes()
    first = receive(a, media("RTP/SAVP", f"1 AES_CM_128_HMAC_SHA1_80 inline:{K30[0]}"))
    same = receive(a, media("RTP/SAVP", f"1 AES_CM_128_HMAC_SHA1_80 inline:{K30[0]}"))
    assert same == first  # the relay keeps its contexts
    assert first is not None
    rekeyed = receive(a, media("RTP/SAVP", f"1 AES_CM_128_HMAC_SHA1_80 inline:{K30[1]}"))
    assert rekeyed is not None and rekeyed.rx == bytes([2]) * 30 and rekeyed.tx == first.tx
    # Another tag with the same suite: still ansim's key; another suite: a new one.
    moved = receive(a, media("RTP/SAVP", f"7 AES_CM_128_HMAC_SHA1_80 inline:{K30[1]}"))
    assert moved is not None and moved.tx == first.tx and [c.tag for c in a.ours] == [7]
    other = receive(a, media("RTP/SAVP", f"1 AEAD_AES_256_GCM inline:{K44}"))
    assert other is not None and other.tx != first.tx and len(other.tx or b"") == 44


def test_plain_and_best_effort_legs() -> None:
    a, b = LegSdes(), LegSdes()
    assert receive(a, media("RTP/AVP")) is None
    mirror(b, a)
    assert (a.ours, b.proto, b.ours) == ([], b"RTP/AVP", [])
    # RTP/AVP with a=crypto (best effort): SRTP toward the caller, fresh lines offered
    # on RTP/AVP to the callee, which may answer plain.
    a, b = LegSdes(), LegSdes()
    assert receive(a, media("RTP/AVP", f"1 AES_CM_128_HMAC_SHA1_80 inline:{K30[0]}")) is not None
    mirror(b, a)
    assert b.proto == b"RTP/AVP" and len(b.ours) == len(OFFER_ORDER)
    assert receive(b, media("RTP/AVP")) is None
    assert b.ours == [] and b.relay_field() is None
    # A best-effort offer whose only line ansim cannot use is answered plain.
    a = LegSdes()
    assert receive(a, media("RTP/AVP", f"1 F8_128_HMAC_SHA1_80 inline:{K30[0]}")) is None


@pytest.mark.parametrize(
    ("caller", "policy", "proto", "keyed"),
    [
        ("RTP/AVP", "mandatory", b"RTP/SAVP", True),
        ("RTP/AVPF", "mandatory", b"RTP/SAVPF", True),
        ("RTP/AVP", "optional", b"RTP/AVP", True),
        ("RTP/SAVP", "optional", b"RTP/AVP", True),
        ("RTP/SAVP", "off", b"RTP/AVP", False),
        ("RTP/SAVPF", "off", b"RTP/AVPF", False),
    ],
)
def test_a_trunk_policy_decides_what_the_callee_is_offered(
    caller: str, policy: str, proto: bytes, keyed: bool
) -> None:
    a, b = LegSdes(), LegSdes()
    cryptos = [f"1 AES_CM_128_HMAC_SHA1_80 inline:{K30[0]}"] if "SAVP" in caller else []
    receive(a, media(caller, *cryptos))
    mirror(b, a, policy)
    assert b.proto == proto and bool(b.ours) == keyed and b.keys is None


def test_srtp_without_a_usable_suite_cannot_be_carried() -> None:
    for offer in (
        media("RTP/SAVP"),
        media("RTP/SAVP", f"1 AES_256_CM_HMAC_SHA1_80 inline:{K44}"),
        media("RTP/SAVPF", f"1 AES_CM_128_HMAC_SHA1_80 inline:{K30[0]}|1:4"),
    ):
        state = LegSdes()
        with pytest.raises(SdesError):
            receive(state, offer)
        assert state.proto is None and state.keys is None  # nothing changed


def test_the_anchored_sdp_carries_ansims_lines_and_profile_only() -> None:
    offer = parse_sdp(
        section(
            "RTP/SAVP",
            f"1 AES_CM_128_HMAC_SHA1_80 inline:{K30[0]}",
            f"2 AEAD_AES_256_GCM inline:{K44}",
        )
    )
    a, b = LegSdes(), LegSdes()
    receive(a, offer.media[0])
    mirror(b, a)
    builder = SdpBuilder(9, b"192.0.2.1")
    builder.anchor = MediaTarget((b"IP4", b"192.0.2.9"), 30000, 30001)
    builder.srtp = b.builder_lines()
    out = builder.build(offer)
    assert K30[0].encode() not in out and K44.encode() not in out
    lines = out.split(b"\r\n")
    assert b"m=audio 30000 RTP/SAVP 0 101" in lines
    assert [ln for ln in lines if ln.startswith(b"a=crypto:")] == [c.line() for c in b.ours]
    # Toward a plain leg: the profile written is the leg's, and no crypto at all.
    plain = LegSdes()
    receive(plain, media("RTP/AVP"))
    builder.srtp = plain.builder_lines()
    out = builder.build(offer)
    assert b"m=audio 30000 RTP/AVP 0 101" in out.split(b"\r\n") and b"a=crypto" not in out


def test_fresh_lines_are_fresh() -> None:
    assert {key(c) for c in fresh_lines()}.isdisjoint({key(c) for c in fresh_lines()})
