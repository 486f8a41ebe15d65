"""A SIP flood from one source address, as a process of its own: INVITEs and OPTIONS,
or a SIPVicious-style OPTIONS sweep (``friendly-scanner``, one extension after
another), paced to a rate and bounded in time. It prints how many datagrams it sent
and how many it received (an engine that drops a flood answers none).

    python tests/flooder.py --source 127.0.0.5 --to 127.0.0.1:5060 --rate 20000 --seconds 30
"""

from __future__ import annotations

import argparse
import json
import socket
import time


def messages(kind: str, source: str, port: int, target: str, n: int = 2000) -> list[bytes]:
    out = []
    for i in range(n):
        if kind == "sweep":
            method, user, agent = "OPTIONS", str(100 + i), "friendly-scanner"
        else:
            method = "INVITE" if i % 2 == 0 else "OPTIONS"
            user, agent = f"0507{i:07d}", "flood/1.0"
        out.append(
            (
                f"{method} sip:{user}@{target} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {source}:{port};branch=z9hG4bKf{i}x{time.time_ns()}\r\n"
                f'From: "{user}" <sip:{user}@{source}>;tag=f{i}\r\n'
                f"To: <sip:{user}@{target}>\r\nCall-ID: flood-{i}-{time.time_ns()}@{source}\r\n"
                f"CSeq: 1 {method}\r\nMax-Forwards: 70\r\nUser-Agent: {agent}\r\n"
                f"Contact: <sip:{user}@{source}:{port}>\r\nContent-Length: 0\r\n\r\n"
            ).encode()
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--source", required=True)
    ap.add_argument("--to", required=True)
    ap.add_argument("--rate", type=float, required=True)
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--kind", choices=("flood", "sweep"), default="flood")
    args = ap.parse_args()
    host, _, port_text = args.to.rpartition(":")
    dest = (host, int(port_text))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((args.source, 0))
    sock.setblocking(False)
    msgs = messages(args.kind, args.source, sock.getsockname()[1], args.to)
    sent = received = 0
    start = time.monotonic()
    end = start + args.seconds
    tick = 0.005  # a batch every 5 ms
    batch = max(1, int(args.rate * tick))
    next_at = start
    i = 0
    n = len(msgs)
    while True:
        now = time.monotonic()
        if now >= end:
            break
        if now < next_at:
            time.sleep(next_at - now)
            continue
        for _ in range(batch):
            try:
                sock.sendto(msgs[i % n], dest)
                sent += 1
            except BlockingIOError:
                break
            i += 1
        next_at += tick
        while True:
            try:
                sock.recv(65536)
                received += 1
            except (BlockingIOError, ConnectionRefusedError):
                break
    elapsed = time.monotonic() - start
    print(
        json.dumps({"sent": sent, "received": received, "seconds": elapsed, "rate": sent / elapsed})
    )


if __name__ == "__main__":
    main()
