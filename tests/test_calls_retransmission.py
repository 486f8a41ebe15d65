"""The basic call when single messages are lost or overtaken, one case at a time.

``test_calls_loss.py`` runs thousands of calls through random loss; this file makes each
loss that matters to the call flow happen on purpose, with a raw UDP caller that leaves
out or repeats messages as a lossy network would, and a raw callee trunk. ansim runs
with T1 = 50 ms (so 64*T1 is 3.2 s). What each case checks:

- the caller never ACKs the 200: ansim retransmits it (T1, doubling) for 64*T1, then
  ACKs and hangs up the callee and hangs up the caller (RFC 3261 §13.3.1.4), at 64*T1 and
  not at the retransmission after it;
- the caller's ACK is lost and its BYE arrives: the callee gets an ACK, then the BYE, and
  the 200 stops being retransmitted;
- ansim's 200 to the BYE is lost: the BYE retransmitted, also after the call ended, is
  answered 200 again (not 481) and not relayed twice;
- the caller's INVITE comes again after the answer: absorbed, no second call;
- the callee's 180 arrives after its 200: not relayed after the 200;
- the caller's ACK arrives after its BYE: the callee is sent one ACK, before the BYE;
- ansim's INVITE to the callee is lost: sent again after T1 (timer A), same branch;
- ansim's ACK to the callee is lost: the callee's 200 retransmission is ACKed again
  (end to end, §13.2.2.4), while the call is up and after ansim's BYE;
- ansim's BYE to the callee is lost: sent again after T1 (timer E); the caller had its
  200 at once;
- a failure (486) relayed to the caller: resent (timer G) until the caller's ACK, and for
  64*T1 at most when the ACK never comes (timer H); the callee's 486 resent because
  ansim's ACK was lost is ACKed again (the client transaction absorbs it, timer D);
- the caller's CANCEL crosses ansim's 200, and comes again (its answer lost): answered
  each time without effect on the call (§9.2), never sent on to the callee.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from body_samples import sdp_offer
from call_env import CALLEE, CALLER, VIRTUAL_AX, Ansim, trunk, user_part
from conftest import free_port
from raw_sip import Body, RawCallee, RawCaller, Reply

from b2bua.sip.message import Request, Response

T1 = 0.05
TIMER_64T1 = 64 * T1


@pytest.fixture
def callee_port() -> int:
    return free_port()


@pytest.fixture
def ansim(tmp_path: Path, callee_port: int) -> Iterator[Ansim]:
    with Ansim(
        tmp_path / "ansim",
        trunks=[trunk("callee-trunk", callee_port)],
        routes=[{"prefix": "+82", "trunks": ["callee-trunk"]}],
        timers={"t1": T1},
    ) as engine:
        yield engine


def answering_callee(
    port: int, late: list[Reply] | None = None, lose: dict[bytes, int] | None = None
) -> RawCallee:
    answer = Body("application/sdp", sdp_offer(CALLEE, host="127.0.0.1"))
    replies = (
        [Reply(200, "OK", answer)] if late else [Reply(180, "Ringing"), Reply(200, "OK", answer)]
    )
    return RawCallee(replies, port=port, late=late or [], lose=lose).start()


class StepCaller(RawCaller):
    """The carrier's side, one message at a time: what it sends is the test's choice."""

    def __init__(self, dest: tuple[str, int]) -> None:
        super().__init__(dest)
        self.uri = f"sip:{user_part(VIRTUAL_AX)}@{dest[0]}:{dest[1]}"
        offer = Body("application/sdp", sdp_offer(CALLER, host="127.0.0.1"))
        self.invite = self._request("INVITE", self.uri, 1, f"<{self.uri}>", offer, "z9hG4bKinv1")
        self.log: list[tuple[float, Request | Response]] = []
        self.to_tagged = ""
        self.target = self.uri

    def listen(self, seconds: float, until_status: int | None = None) -> None:
        """Keep what arrives for ``seconds`` (or until a response with ``until_status``);
        a BYE from ansim is answered 200."""
        deadline = time.monotonic() + seconds
        while (got := self.recv(deadline)) is not None:
            msg, addr = got
            self.log.append((time.monotonic(), msg))
            if isinstance(msg, Request) and msg.method == b"BYE":
                self.send(answer(msg, 200), addr)
            if isinstance(msg, Response):
                self.responses.append(msg)
                if msg.cseq[1] == b"INVITE" and msg.status == 200 and not self.to_tagged:
                    self.to_tagged = f"<{self.uri}>;tag={(msg.to_tag or b'').decode()}"
                    contact = (msg.get(b"contact") or b"").decode()
                    self.target = contact.strip("<>").split(">", 1)[0]
                if msg.status == until_status:
                    return

    def ack(self) -> None:
        self.send(self._request("ACK", self.target, 1, self.to_tagged, Body()), self.dest)

    def ack_failure(self) -> None:
        """ACK the INVITE's non-2xx final (same branch as the INVITE, §17.1.1.3)."""
        final = next(r for r in self.responses if r.cseq[1] == b"INVITE" and r.status >= 300)
        to = f"<{self.uri}>;tag={(final.to_tag or b'').decode()}"
        self.send(self._request("ACK", self.uri, 1, to, Body(), "z9hG4bKinv1"), self.dest)

    def bye(self, branch: str = "z9hG4bKbye2") -> bytes:
        data = self._request("BYE", self.target, 2, self.to_tagged, Body(), branch)
        self.send(data, self.dest)
        return data

    def cancel(self) -> None:
        """CANCEL the INVITE (its branch, Request-URI and To, §9.1)."""
        self.send(
            self._request("CANCEL", self.uri, 1, f"<{self.uri}>", Body(), "z9hG4bKinv1"),
            self.dest,
        )

    def statuses(self, method: bytes) -> list[int]:
        return [r.status for r in self.responses if r.cseq[1] == method]

    def times(self, status: int, method: bytes) -> list[float]:
        return [
            t
            for t, m in self.log
            if isinstance(m, Response) and (m.status, m.cseq[1]) == (status, method)
        ]

    def requests_from_ansim(self) -> list[bytes]:
        return [m.method for _, m in self.log if isinstance(m, Request)]


def answer(request: Request, status: int) -> bytes:
    """A response to ``request`` built from its own headers."""
    lines = [f"SIP/2.0 {status} OK"]
    for name in (b"via", b"from", b"to", b"call-id", b"cseq"):
        for value in request.get_all(name):
            lines.append(f"{name.decode().title()}: {value.decode()}")
    return ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()


def methods(callee: RawCallee) -> list[bytes]:
    return [r.method for r in callee.requests]


def test_no_ack_ends_the_call_at_64_t1(ansim: Ansim, callee_port: int) -> None:
    callee = answering_callee(callee_port)
    with StepCaller(ansim.udp) as caller:
        caller.send(caller.invite, caller.dest)
        caller.listen(TIMER_64T1 + 2.5)  # never ACKs; answers the BYE
    callee.join()
    oks = caller.times(200, b"INVITE")
    gaps = [b - a for a, b in itertools.pairwise(oks)]
    assert len(oks) >= 5, caller.statuses(b"INVITE")
    # T1, 2*T1, 4*T1...: each wait about twice the one before
    assert all(1.5 < b / a < 2.6 for a, b in itertools.pairwise(gaps[:4])), gaps
    bye_at = next((t for t, m in caller.log if isinstance(m, Request) and m.method == b"BYE"), None)
    assert bye_at is not None, f"no BYE within 64*T1 + 2.5 s: 200 sent at {oks}"
    assert TIMER_64T1 - 0.1 < bye_at - oks[0] < TIMER_64T1 + 0.3, (bye_at - oks[0], gaps)
    assert methods(callee) == [b"INVITE", b"ACK", b"BYE"]
    row = ansim.cdr()
    assert (row["status"], row["ended_by"], row["reason"], row["q850_cause"]) == (
        200,
        "engine",
        "no_ack",
        102,
    )
    assert TIMER_64T1 * 1000 - 100 < row["duration_ms"] < TIMER_64T1 * 1000 + 300, row


def test_lost_ack_then_bye(ansim: Ansim, callee_port: int) -> None:
    callee = answering_callee(callee_port)
    with StepCaller(ansim.udp) as caller:
        caller.send(caller.invite, caller.dest)
        caller.listen(2.0, until_status=200)
        caller.bye()  # the ACK before it was lost
        caller.listen(1.0)
    callee.join()
    assert methods(callee) == [b"INVITE", b"ACK", b"BYE"]
    assert caller.statuses(b"BYE") == [200]
    bye_ok = caller.times(200, b"BYE")[0]
    assert not [t for t in caller.times(200, b"INVITE") if t > bye_ok + 0.01]
    row = ansim.cdr()
    assert (row["status"], row["ended_by"], row["reason"]) == (200, "caller", None)


def test_lost_200_to_bye_then_bye_again(ansim: Ansim, callee_port: int) -> None:
    callee = answering_callee(callee_port)
    with StepCaller(ansim.udp) as caller:
        caller.send(caller.invite, caller.dest)
        caller.listen(2.0, until_status=200)
        caller.ack()
        bye = caller.bye()
        caller.listen(0.3)  # its 200 "lost": the caller sends the same BYE again, twice
        caller.send(bye, caller.dest)
        caller.listen(1.0)
        caller.send(bye, caller.dest)  # well after the call ended, within 64*T1
        caller.listen(0.5)
    callee.join()
    assert caller.statuses(b"BYE") == [200, 200, 200]
    assert methods(callee) == [b"INVITE", b"ACK", b"BYE"]
    rows = ansim.cdr_rows(1, timeout=5)
    assert len(rows) == 1 and rows[0]["ended_by"] == "caller"


def test_invite_again_after_the_answer_is_absorbed(ansim: Ansim, callee_port: int) -> None:
    callee = answering_callee(callee_port)
    with StepCaller(ansim.udp) as caller:
        caller.send(caller.invite, caller.dest)
        caller.listen(2.0, until_status=200)
        caller.send(caller.invite, caller.dest)  # as if the 200 had not arrived
        caller.listen(0.3)
        caller.ack()
        caller.bye()
        caller.listen(1.0)
    callee.join()
    assert methods(callee) == [b"INVITE", b"ACK", b"BYE"]
    assert caller.statuses(b"BYE") == [200]
    time.sleep(0.5)
    rows = ansim.cdr_rows(1, timeout=5)
    assert len(rows) == 1 and rows[0]["ended_by"] == "caller"


def test_callee_180_after_its_200_is_not_relayed(ansim: Ansim, callee_port: int) -> None:
    callee = answering_callee(callee_port, late=[Reply(180, "Ringing")])
    with StepCaller(ansim.udp) as caller:
        caller.send(caller.invite, caller.dest)
        caller.listen(2.0, until_status=200)
        caller.listen(0.3)
        caller.ack()
        caller.bye()
        caller.listen(1.0)
    callee.join()
    statuses = caller.statuses(b"INVITE")
    assert statuses[0] == 100 and set(statuses[1:]) == {200}, statuses
    assert ansim.cdr()["ended_by"] == "caller"


def test_ack_after_bye_gives_the_callee_one_ack_before_the_bye(
    ansim: Ansim, callee_port: int
) -> None:
    callee = answering_callee(callee_port)
    with StepCaller(ansim.udp) as caller:
        caller.send(caller.invite, caller.dest)
        caller.listen(2.0, until_status=200)
        caller.bye()
        caller.ack()  # overtaken by the BYE
        caller.listen(1.0)
    callee.join()
    assert methods(callee) == [b"INVITE", b"ACK", b"BYE"]
    assert caller.statuses(b"BYE") == [200]
    assert ansim.cdr()["ended_by"] == "caller"


def arrival(callee: RawCallee, method: bytes) -> list[float]:
    return [t for t, m in callee.arrivals if m.method == method]


def branch(msg: Request) -> bytes:
    via = msg.get(b"via") or b""
    return via.split(b"branch=", 1)[1].split(b";", 1)[0]


def test_lost_invite_to_the_callee_is_sent_again_at_t1(ansim: Ansim, callee_port: int) -> None:
    callee = answering_callee(callee_port, lose={b"INVITE": 1})
    with StepCaller(ansim.udp) as caller:
        caller.send(caller.invite, caller.dest)
        caller.listen(2.0, until_status=200)
        caller.ack()
        caller.bye()
        caller.listen(1.0)
    callee.join()
    (lost_at, lost), (again_at, again) = callee.lost[0], callee.arrivals[0]
    assert lost.method == again.method == b"INVITE" and branch(lost) == branch(again)
    assert 0.8 * T1 < again_at - lost_at < 3 * T1, again_at - lost_at
    assert methods(callee) == [b"INVITE", b"ACK", b"BYE"]
    assert caller.statuses(b"BYE") == [200]
    row = ansim.cdr()
    assert (row["status"], row["ended_by"], row["reason"]) == (200, "caller", None)


def test_lost_ack_to_the_callee_is_sent_again_for_its_2xx(ansim: Ansim, callee_port: int) -> None:
    callee = answering_callee(callee_port, lose={b"ACK": 1})
    with StepCaller(ansim.udp) as caller:
        caller.send(caller.invite, caller.dest)
        caller.listen(2.0, until_status=200)
        caller.ack()
        caller.listen(1.2)  # the callee sends its 200 again after its T1 (0.5 s)
        caller.bye()
        caller.listen(1.0)
    callee.join()
    assert len(callee.lost) == 1
    assert methods(callee) == [b"INVITE", b"ACK", b"BYE"]
    (acked_at,) = arrival(callee, b"ACK")
    assert 0.4 < acked_at - callee.lost[0][0] < 1.0, acked_at - callee.lost[0][0]
    # the 2xx retransmission is the callee's own business: not relayed to the caller
    assert caller.statuses(b"INVITE").count(200) == 1, caller.statuses(b"INVITE")
    row = ansim.cdr()
    assert (row["status"], row["ended_by"], row["reason"]) == (200, "caller", None)


def test_lost_bye_to_the_callee_is_sent_again_at_t1(ansim: Ansim, callee_port: int) -> None:
    callee = answering_callee(callee_port, lose={b"BYE": 1})
    with StepCaller(ansim.udp) as caller:
        caller.send(caller.invite, caller.dest)
        caller.listen(2.0, until_status=200)
        caller.ack()
        caller.bye()
        caller.listen(1.0)
    callee.join()
    (lost_at, lost), (again_at,) = callee.lost[0], arrival(callee, b"BYE")
    assert lost.method == b"BYE"
    assert 0.8 * T1 < again_at - lost_at < 3 * T1, again_at - lost_at
    assert branch(lost) == branch(callee.requests[-1])
    assert caller.statuses(b"BYE") == [200]
    assert ansim.cdr()["ended_by"] == "caller"


def refusing_callee(port: int, lose: dict[bytes, int] | None = None) -> RawCallee:
    return RawCallee([Reply(180, "Ringing"), Reply(486, "Busy Here")], port=port, lose=lose).start()


def test_failure_is_resent_until_the_callers_ack(ansim: Ansim, callee_port: int) -> None:
    callee = refusing_callee(callee_port, lose={b"ACK": 1})
    with StepCaller(ansim.udp) as caller:
        caller.send(caller.invite, caller.dest)
        caller.listen(2.0, until_status=486)
        caller.listen(0.5)  # no ACK yet: the 486 comes again (timer G)
        caller.ack_failure()
        acked_at = time.monotonic()
        caller.listen(1.5)
    callee.join()
    busy = caller.times(486, b"INVITE")
    assert len([t for t in busy if t < acked_at]) >= 3, busy
    gaps = [b - a for a, b in itertools.pairwise(busy)]
    assert all(1.5 < b / a < 2.6 for a, b in itertools.pairwise(gaps[:3])), gaps
    assert not [t for t in busy if t > acked_at + 0.02], (busy, acked_at)
    # the callee's 486, sent again because ansim's ACK was lost, is ACKed again
    assert len(callee.lost) == 1 and methods(callee) == [b"INVITE", b"ACK"]
    assert branch(callee.lost[0][1]) == branch(callee.requests[0])
    row = ansim.cdr()
    assert (row["status"], row["ended_by"]) == (486, "callee"), row


def test_failure_never_acked_is_resent_for_64_t1(ansim: Ansim, callee_port: int) -> None:
    callee = refusing_callee(callee_port)
    with StepCaller(ansim.udp) as caller:
        caller.send(caller.invite, caller.dest)
        caller.listen(2.0, until_status=486)
        caller.listen(TIMER_64T1 + 2.0)  # never ACKs
    callee.join()
    busy = caller.times(486, b"INVITE")
    assert len(busy) >= 5, busy
    assert busy[-1] - busy[0] < TIMER_64T1, busy  # timer H: no 486 after 64*T1
    row = ansim.cdr()
    assert (row["status"], row["ended_by"]) == (486, "callee"), row


def test_cancel_crossing_the_200_leaves_the_call_up(ansim: Ansim, callee_port: int) -> None:
    callee = answering_callee(callee_port)
    with StepCaller(ansim.udp) as caller:
        caller.send(caller.invite, caller.dest)
        caller.listen(2.0, until_status=200)
        caller.cancel()  # sent before the 200 arrived
        caller.listen(0.3)
        caller.cancel()  # its answer lost: the same CANCEL again
        caller.listen(0.3)
        caller.ack()
        caller.listen(0.3)
        caller.bye()
        caller.listen(1.0)
    callee.join()
    answers = caller.statuses(b"CANCEL")
    assert len(answers) == 2 and answers[0] == answers[1] and answers[0] in (200, 481), answers
    assert 487 not in caller.statuses(b"INVITE")
    assert methods(callee) == [b"INVITE", b"ACK", b"BYE"]
    assert caller.statuses(b"BYE") == [200]
    row = ansim.cdr()
    assert (row["status"], row["ended_by"], row["reason"]) == (200, "caller", None)
