"""SDP as the far leg sees it (b2bua/sip/sdp.py): ansim's origin, no free-text lines,
and o= versions that move exactly when the sender's do, across a change of sender."""

from __future__ import annotations

from b2bua.sip.sdp import OriginRewriter, rewrite_sdp


def sdp(version: int, *, port: int = 4000, user: str = "01047382916") -> bytes:
    return (
        f"v=0\r\no={user} 53655765 {version} IN IP4 192.0.2.1\r\ns=call from +821047382916\r\n"
        "i=010-4738-2916\r\nu=http://example.com/1047382916\r\ne=01047382916@example.com\r\n"
        f"p=010 4738 2916\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\n"
        "a=rtpmap:0 PCMU/8000\r\n"
    ).encode()


def origin_of(body: bytes) -> list[bytes]:
    return next(line for line in body.split(b"\r\n") if line.startswith(b"o=")).split()


def test_identity_lines_replaced_or_dropped_media_kept() -> None:
    out = rewrite_sdp(sdp(7), OriginRewriter(42))
    assert out.split(b"\r\n")[:3] == [b"v=0", b"o=ansim 42 1 IN IP4 192.0.2.1", b"s=-"]
    for digits in (b"4738", b"i=", b"u=", b"e=", b"p="):
        assert digits not in out
    assert b"m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n" in out
    assert (
        rewrite_sdp(b"v=0\no=x 1 1 IN IP4 h\ns=y\n", OriginRewriter(1))
        == b"v=0\no=ansim 1 1 IN IP4 h\ns=-\n"
    )


def test_version_follows_the_sender() -> None:
    rw = OriginRewriter(9)
    versions = [origin_of(rewrite_sdp(sdp(v), rw))[2] for v in (100, 100, 101, 105)]
    assert versions == [b"1", b"1", b"2", b"6"]


def test_new_sender_continues_above_the_last_version() -> None:
    rw = OriginRewriter(9)
    rewrite_sdp(sdp(100), rw)
    rewrite_sdp(sdp(101), rw)
    rw.new_sender()  # failover: the next trunk numbers its SDP from 1
    versions = [origin_of(rewrite_sdp(sdp(v, port=5000), rw))[2] for v in (1, 1, 2)]
    assert versions == [b"3", b"3", b"4"]
    assert origin_of(rewrite_sdp(sdp(3), rw))[1] == b"9"  # one session id for the leg


def test_new_sender_before_any_sdp_changes_nothing() -> None:
    rw = OriginRewriter(3)
    rw.new_sender()
    assert origin_of(rewrite_sdp(sdp(50), rw))[2] == b"1"
