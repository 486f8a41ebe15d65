"""Parser benchmark: µs per message to parse and to serialize a typical INVITE with SDP
(about 900 bytes) and a 200 OK, each measured separately.

    .venv/bin/python bench/sip_parser_bench.py [--seconds 1.0]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from b2bua.sip.parser import parse_datagram

SDP = (
    b"v=0\r\n"
    b"o=- 3912048771 3912048771 IN IP4 192.0.2.10\r\n"
    b"s=-\r\n"
    b"c=IN IP4 192.0.2.10\r\n"
    b"t=0 0\r\n"
    b"m=audio 40000 RTP/AVP 8 0 18 101\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:18 G729/8000\r\n"
    b"a=fmtp:18 annexb=no\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-15\r\n"
    b"a=ptime:20\r\n"
    b"a=sendrecv\r\n"
)

INVITE = (
    b"INVITE sip:+825012345678@198.51.100.7:5060;user=phone SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-524287-1---a1b2c3d4e5f6;rport\r\n"
    b"Max-Forwards: 69\r\n"
    b"Contact: <sip:+821012345678@192.0.2.10:5060;transport=udp>\r\n"
    b"To: <sip:+825012345678@198.51.100.7;user=phone>\r\n"
    b'From: "Parent" <sip:+821012345678@192.0.2.10;user=phone>;tag=8f3a9c21\r\n'
    b"Call-ID: 4c1d9a7e-2b6f-4e3a-9d8c-7f1e2a3b4c5d@192.0.2.10\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Allow: INVITE, ACK, CANCEL, BYE, UPDATE, PRACK, INFO, OPTIONS\r\n"
    b"Supported: 100rel, timer, replaces\r\n"
    b"Session-Expires: 1800;refresher=uac\r\n"
    b"Min-SE: 90\r\n"
    b"P-Asserted-Identity: <sip:+821012345678@192.0.2.10;user=phone>\r\n"
    b"User-Agent: carrier-sbc/4.2\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: %d\r\n\r\n" % len(SDP)
) + SDP

OK200 = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK7e3d1c9a0b;received=198.51.100.7;rport=5060\r\n"
    b"To: <sip:+821098765432@203.0.113.5;user=phone>;tag=as5f2b77c1\r\n"
    b"From: <sip:+825012345678@198.51.100.7;user=phone>;tag=b2b-91ac3e\r\n"
    b"Call-ID: b2b-6a1f0c2e9d4b@198.51.100.7\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: <sip:+821098765432@203.0.113.5:5060>\r\n"
    b"Allow: INVITE, ACK, CANCEL, BYE, UPDATE, PRACK, INFO, OPTIONS\r\n"
    b"Supported: timer\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def per_call_us(fn: Callable[[], object], seconds: float) -> float:
    n = 1000
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        dt = time.perf_counter() - t0
        if dt >= seconds:
            return dt / n * 1e6
        n *= 2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=1.0, help="minimum time per measurement")
    ap.add_argument(
        "--repeat", type=int, default=5, help="measurements per figure (best is printed)"
    )
    args = ap.parse_args()
    print(f"INVITE {len(INVITE)} bytes, 200 OK {len(OK200)} bytes; best of {args.repeat}")
    for label, data in (("INVITE+SDP", INVITE), ("200 OK", OK200)):
        msg = parse_datagram(data)
        assert msg.serialize() == data, "round trip must be byte-exact"
        parse = min(
            per_call_us(partial(parse_datagram, data), args.seconds) for _ in range(args.repeat)
        )
        ser = min(per_call_us(msg.serialize, args.seconds) for _ in range(args.repeat))
        print(f"{label:11s} parse {parse:6.2f} us/msg   serialize {ser:6.2f} us/msg")


if __name__ == "__main__":
    main()
