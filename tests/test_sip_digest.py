"""The digest module (b2bua.sip.digest): RFC 7616's and RFC 2617's worked examples, header
values read and written, and the server's verdicts (good, wrong, replayed, stale, not its
own nonce, malformed) for every algorithm."""

from __future__ import annotations

import hashlib

import pytest

from b2bua.sip.digest import (
    Challenge,
    Credentials,
    DigestError,
    DigestServer,
    Outcome,
    answer,
    best_challenge,
    digest_response,
    ha1,
    parse_challenge,
    parse_credentials,
)

# RFC 7616 §3.9.1: the same request answered with MD5 and with SHA-256.
RFC7616 = {
    "username": "Mufasa",
    "password": "Circle of Life",
    "realm": "http-auth@example.org",
    "nonce": "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
    "cnonce": "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    "opaque": "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS",
    "uri": "/dir/index.html",
    "method": "GET",
}
RFC7616_RESPONSES = {
    "MD5": "8ca523f5e9506fed4657c9700eebdbec",
    "SHA-256": "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
}


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_rfc7616_worked_example(algorithm: str) -> None:
    e = RFC7616
    challenge = Challenge(e["realm"], e["nonce"], algorithm, ("auth", "auth-int"), e["opaque"])
    creds = answer(challenge, e["username"], e["password"], e["method"], e["uri"], e["cnonce"])
    assert creds.response == RFC7616_RESPONSES[algorithm]
    assert (creds.qop, creds.nc, creds.opaque) == ("auth", "00000001", e["opaque"])
    # and the header written reads back as the same credentials
    assert parse_credentials(creds.header_value()) == creds


def test_rfc2617_md5_example() -> None:
    h1 = ha1("MD5", "Mufasa", "testrealm@host.com", "Circle Of Life")
    got = digest_response(
        "MD5",
        h1,
        "dcd98b7102dd2f0e8b11d0f600bfb0c093",
        "GET",
        "/dir/index.html",
        qop="auth",
        nc="00000001",
        cnonce="0a4f113b",
    )
    assert got == "6629fae49393a05397450978507c4ef1"


def test_sha512_256_and_sess_follow_the_definitions() -> None:
    """Checked against the RFC 7616 §3.4 formulas written out with hashlib."""

    def h(text: str) -> str:
        return hashlib.new("sha512_256", text.encode()).hexdigest()

    a1 = h("u:r:p")
    a2 = h("INVITE:sip:x@h")
    plain = h(f"{a1}:n:00000002:c:auth:{a2}")
    sess = h(f"{h(f'{a1}:n:c')}:n:00000002:c:auth:{a2}")
    assert ha1("SHA-512-256", "u", "r", "p") == a1
    kw = {"qop": "auth", "nc": "00000002", "cnonce": "c"}
    assert digest_response("SHA-512-256", a1, "n", "INVITE", "sip:x@h", **kw) == plain
    assert digest_response("SHA-512-256-sess", a1, "n", "INVITE", "sip:x@h", **kw) == sess


def test_rfc2069_without_qop() -> None:
    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    c = Challenge("r", "n")
    creds = answer(c, "u", "p", "BYE", "sip:a@b", "ignored")
    assert creds.qop is None and creds.nc is None and creds.cnonce is None
    assert creds.response == md5(f"{md5('u:r:p')}:n:{md5('BYE:sip:a@b')}")


def test_auth_int_hashes_the_body() -> None:
    c = Challenge("r", "n", "SHA-256", ("auth-int",))
    a = answer(c, "u", "p", "INVITE", "sip:x@h", "c", body=b"v=0\r\n")
    b = answer(c, "u", "p", "INVITE", "sip:x@h", "c", body=b"v=1\r\n")
    assert a.qop == "auth-int" and a.response != b.response


def test_challenge_values_read_back() -> None:
    raw = (
        b'Digest realm="sip.example.net", qop="auth,auth-int", '
        b'algorithm=SHA-256, nonce="abc\\"def", opaque="o", stale=TRUE'
    )
    c = parse_challenge(raw)
    assert c == Challenge("sip.example.net", 'abc"def', "SHA-256", ("auth", "auth-int"), "o", True)
    assert parse_challenge(c.header_value()) == c
    # defaults: MD5, no qop, not stale
    assert parse_challenge(b'Digest realm="r", nonce="n"') == Challenge("r", "n")
    # scheme and parameter names in any case, spaces around '='
    assert parse_challenge(b'DIGEST Realm = "r" , NONCE="n"').realm == "r"


@pytest.mark.parametrize(
    "raw",
    [
        b'Basic realm="r"',
        b'Digest nonce="n"',
        b'Digest realm="r"',
        b'Digest realm="r", nonce="n", algorithm=SHA-1',
        b'Digest realm="r", nonce="n',
        b'Digest realm="r", nonce="n", realm="s"',
        b"Digest realm",
        b"",
    ],
)
def test_unusable_challenges(raw: bytes) -> None:
    with pytest.raises(DigestError):
        parse_challenge(raw)


def test_best_challenge_prefers_the_strongest_known_algorithm() -> None:
    values = [
        b'Digest realm="r", nonce="1", algorithm=MD5, qop="auth"',
        b'Digest realm="r", nonce="2", algorithm=SHA-256, qop="auth"',
        b'Digest realm="r", nonce="3", algorithm=UNKNOWN, qop="auth"',
        b'Basic realm="r"',
    ]
    best = best_challenge(values)
    assert best is not None and best.algorithm == "SHA-256"
    assert best_challenge(values, realm="other") is None
    assert best_challenge([b'Digest realm="r", nonce="1", qop="token"']) is None
    assert best_challenge([]) is None


@pytest.mark.parametrize(
    "raw",
    [
        b'Digest realm="r", nonce="n", uri="sip:a", response="x"',
        b'Digest username="u", nonce="n", uri="sip:a", response="x"',
        b'Digest username="u", realm="r", uri="sip:a", response="x"',
        b'Digest username="u", realm="r", nonce="n", response="x"',
        b'Digest username="u", realm="r", nonce="n", uri="sip:a"',
        b"Basic dTpw",
        b'Digest username="\xff", realm="r", nonce="n", uri="sip:a", response="x"',
    ],
)
def test_unusable_credentials(raw: bytes) -> None:
    with pytest.raises(DigestError):
        parse_credentials(raw)


# -- the server -----------------------------------------------------------------------------

REALM = "ansim.test"
URI = "sip:+8250700001@127.0.0.1:5060"
ALGS = ("SHA-256", "MD5", "SHA-512-256")


def server(**kw: float) -> DigestServer:
    return DigestServer(b"k" * 32, **kw)  # type: ignore[arg-type]


def ha1_of(password: str) -> object:
    return lambda alg: ha1(alg, "carrier", REALM, password)


def creds_for(
    srv: DigestServer,
    algorithm: str,
    now: float,
    *,
    password: str = "secret",
    nc: int = 1,
    uri: str = URI,
    nonce: str | None = None,
) -> Credentials:
    values = srv.challenges(REALM, (algorithm,), now)
    c = parse_challenge(values[0])
    if nonce is not None:
        c = Challenge(c.realm, nonce, c.algorithm, c.qop)
    return answer(c, "carrier", password, "INVITE", uri, "cn0nce", nc)


def verify(srv: DigestServer, creds: Credentials, now: float, password: str = "secret") -> Outcome:
    return srv.verify(creds, "INVITE", URI, REALM, ALGS, ha1_of(password), now)  # type: ignore[arg-type]


@pytest.mark.parametrize("algorithm", ALGS)
def test_server_accepts_good_credentials_once_per_count(algorithm: str) -> None:
    srv = server()
    creds = creds_for(srv, algorithm, 100.0)
    assert verify(srv, creds, 101.0) == Outcome.OK
    # the same nonce and count again: a replay; a higher count is a new request
    assert verify(srv, creds, 102.0) == Outcome.REPLAY
    c = parse_challenge(srv.challenges(REALM, (algorithm,), 100.0)[0])
    again = answer(Challenge(REALM, creds.nonce, algorithm, c.qop), "carrier", "secret",
                   "INVITE", URI, "cn0nce", 2)  # fmt: skip
    assert verify(srv, again, 103.0) == Outcome.OK
    assert verify(srv, again, 103.0) == Outcome.REPLAY
    assert srv.tracked() == 1


@pytest.mark.parametrize("algorithm", ALGS)
def test_server_refuses_a_wrong_password(algorithm: str) -> None:
    srv = server()
    assert verify(srv, creds_for(srv, algorithm, 0.0, password="guess"), 1.0) == Outcome.WRONG
    assert srv.tracked() == 0  # nothing is remembered of a failed attempt


def test_unknown_user_answers_like_a_wrong_password() -> None:
    srv = server()
    creds = creds_for(srv, "MD5", 0.0)
    assert srv.verify(creds, "INVITE", URI, REALM, ALGS, lambda alg: None, 1.0) == Outcome.WRONG


def test_stale_nonce_is_reported_only_with_a_good_response() -> None:
    srv = server(lifetime=30.0)
    creds = creds_for(srv, "SHA-256", 0.0)
    assert verify(srv, creds, 31.0) == Outcome.STALE
    assert verify(srv, creds_for(srv, "SHA-256", 0.0, password="x"), 31.0) == Outcome.WRONG
    # a fresh nonce is accepted at once
    assert verify(srv, creds_for(srv, "SHA-256", 31.0), 31.5) == Outcome.OK


def test_nonces_of_another_key_or_realm_or_made_up_are_unknown() -> None:
    mine, other = server(), DigestServer(b"x" * 32)
    assert verify(mine, creds_for(other, "MD5", 0.0), 1.0) == Outcome.UNKNOWN_NONCE
    for forged in ("", "AAAA", "not base64 !", "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB"):
        assert verify(mine, creds_for(mine, "MD5", 0.0, nonce=forged), 1.0) == Outcome.UNKNOWN_NONCE
    # a nonce made for one realm does not serve another
    nonce = parse_challenge(mine.challenges("elsewhere", ("MD5",), 0.0)[0]).nonce
    assert verify(mine, creds_for(mine, "MD5", 0.0, nonce=nonce), 1.0) == Outcome.UNKNOWN_NONCE


def test_malformed_answers() -> None:
    srv = server()
    good = creds_for(srv, "MD5", 0.0)
    variants = [
        Credentials(**{**_fields(good), "qop": None}),
        Credentials(**{**_fields(good), "nc": None}),
        Credentials(**{**_fields(good), "cnonce": None}),
        Credentials(**{**_fields(good), "nc": "1"}),
        Credentials(**{**_fields(good), "nc": "zzzzzzzz"}),
        Credentials(**{**_fields(good), "qop": "auth-int"}),
        Credentials(**{**_fields(good), "realm": "other"}),
        Credentials(**{**_fields(good), "userhash": True}),
        Credentials(**{**_fields(good), "algorithm": "MD5-sess"}),
    ]
    for creds in variants:
        assert verify(srv, creds, 1.0) == Outcome.MALFORMED, creds
    # credentials computed for another Request-URI
    assert verify(srv, creds_for(srv, "MD5", 0.0, uri="sip:other@h"), 1.0) == Outcome.MALFORMED
    # an algorithm this realm does not offer
    sha = creds_for(srv, "SHA-256", 0.0)
    assert srv.verify(sha, "INVITE", URI, REALM, ("MD5",), ha1_of("secret"), 1.0) == (  # type: ignore[arg-type]
        Outcome.MALFORMED
    )


def _fields(c: Credentials) -> dict[str, object]:
    return {f: getattr(c, f) for f in Credentials.__slots__}  # type: ignore[attr-defined]


def test_forgotten_counts_make_old_nonces_stale_never_replayable() -> None:
    srv = server(max_tracked=4)
    used = []
    for i in range(6):
        creds = creds_for(srv, "MD5", float(i))
        assert verify(srv, creds, float(i)) == Outcome.OK
        used.append(creds)
    assert srv.tracked() <= 4
    for creds in used:  # tracked ones are replays, forgotten ones stale: none passes
        assert verify(srv, creds, 10.0) in (Outcome.REPLAY, Outcome.STALE)
    srv.forget_expired(1000.0)
    assert srv.tracked() == 0


def test_challenge_headers_carry_one_nonce_in_the_order_given() -> None:
    srv = server()
    values = srv.challenges(REALM, ("SHA-256", "MD5"), 5.0, stale=True)
    parsed = [parse_challenge(v) for v in values]
    assert [c.algorithm for c in parsed] == ["SHA-256", "MD5"]
    assert parsed[0].nonce == parsed[1].nonce
    assert all(c.stale and c.qop == ("auth",) and c.realm == REALM for c in parsed)
    assert srv.challenges(REALM, ("MD5",), 5.0)[0] != values[1]  # a new nonce each time
