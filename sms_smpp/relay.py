"""The relay: what happens to a message between the carrier side and the upstream side.

It owns the store-and-forward queue and decides, for each event the links report:
translate and store a carrier's submit_sm (answering it only once it is on disk),
pump stored messages to the preferred live upstream within its window, retry on
transient failures until the message's validity ends, map each upstream message id to
the sender's, and turn the upstream's delivery receipts and mobile-originated messages
into deliver_sm for the right carrier bind (stored first, like everything else).

SMPP does not order a receipt and the submit_sm_resp of its message: an SMSC may send
the receipt first, even in the same TCP segment. A receipt whose upstream id is not
mapped yet is held, on disk like the queue, and delivered as soon as a submit_sm_resp
from the same upstream maps that id (also after a restart: the message is resent with
its idempotency key and the upstream answers with the same id). A receipt held longer
than ``queue.receipt_hold`` is dropped and counted (``ansim_smpp_receipts_total
{result="unmatched"}``, logged through a rate limit); past ``queue.receipt_hold_max``
held, the oldest is dropped the same way (``result="evicted"``).

One message an upstream cannot take must not hold back the others. A send left
without an answer is counted against its message when the upstream passed over it
(it answered requests sent later), or when the link died with it as the oldest
unanswered request (the session finds a silent link dead one enquire_link after the
first timeout, see :mod:`sms_smpp.session`); the others in flight go first in line on
the next link, uncounted. A timeout while the upstream answered nothing newer (a
stalled upstream) is retried as before, uncounted. A message counted becomes a
suspect: after its retry delay it is sent alone on a probe bind of its own (see
:mod:`sms_smpp.client`), or, where the upstream refuses a second bind, alone on the
drained main link in a lull (at most ``queue.retry_max`` past its retry time). After
``queue.max_unanswered`` counted sends a message is set aside: dropped from the queue,
recorded ``rejected``, and its sender gets a REJECTD receipt.

Upstreams may set ``max_pdu_size``. A submit_sm that would be larger than the smallest
of them is split at submit time when its text is in message_payload (see
:func:`sms_smpp.concat.split_payload`): the sender gets one message id, each part is a
queue entry of its own, and the sender gets one receipt for the whole, written by
ansim once every part has a final receipt (DELIVRD if all were delivered) or as soon as
one part fails (with that part's state). A message that cannot be split is refused
with ESME_RINVMSGLEN.

Carriers are paced, while an upstream is bound, once more than ``queue.forward_backlog``
messages wait for it: their sockets are still read, so enquire_link, unbind and
generic_nack are answered at once, but each submit_sm waits unanswered (and unstored)
until the backlog is down to half, which holds the carrier's window shut; one that
waits longer than ``server.pace_hold``, or past ``server.pace_queue`` waiting on its
bind, is answered ESME_RTHROTTLED. Nothing is acknowledged that is not stored, so a
carrier that resends what was throttled sends no duplicate.

Disk writes are grouped: everything staged during one event-loop turn is committed in
one LMDB transaction by :meth:`Relay._commit`, and the answers that depend on it are
sent right after.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from translate.bindings import Refusal, Route
from translate.limits import SMS
from translate.numbers import NumberError, NumberPlan

from . import metrics as m
from .concat import concat_info, derived_ref, rewrite_ref, split_payload
from .config import SmppConfig
from .dlr import is_receipt, make_receipt_text, receipt_ids, receipt_state, rewrite_receipt
from .pdu import (
    TRANSIENT_STATUSES,
    Cmd,
    DataSm,
    EsmClass,
    MessageResp,
    MessageState,
    Pdu,
    ShortMessage,
    Status,
    Tag,
    cstr_tlv,
    decode,
    encode_frame,
    encode_short_message_body,
)
from .queue import TO_ESME, TO_UPSTREAM, Message, MessageQueue
from .ratelog import RateLimitedLog
from .records import SmsRecords
from .session import State
from .translation import (
    MESSAGE_TLVS,
    RECEIPT_TLVS,
    REFUSAL_STATUS,
    address_number,
    filter_tlvs,
    from_data_sm,
    set_addresses,
    user_data_length,
)
from .validity import parse_smpp_time

if TYPE_CHECKING:
    from .client import UpstreamLink
    from .server import EsmeLink

log = logging.getLogger(__name__)

#: octets a submit_sm grows by on its way upstream (the message id TLV)
_SEND_OVERHEAD = 4 + 17
_FINAL_STATES = frozenset(
    {
        MessageState.DELIVERED,
        MessageState.EXPIRED,
        MessageState.DELETED,
        MessageState.UNDELIVERABLE,
        MessageState.REJECTED,
    }
)

_FINAL_STATUS = {
    MessageState.DELIVERED: "delivered",
    MessageState.EXPIRED: "expired",
    MessageState.DELETED: "deleted",
    MessageState.UNDELIVERABLE: "undeliverable",
    MessageState.REJECTED: "rejected",
    MessageState.UNKNOWN: "unknown",
}


@dataclass(slots=True)
class HeldReceipt:
    """A receipt that came before the submit_sm_resp mapping its upstream id."""

    id: str
    at: float
    upstream: str
    candidates: list[str]
    body: bytes  # the deliver_sm body as received (data_sm turned into deliver_sm)

    def value(self) -> tuple[Any, ...]:
        return (self.at, self.upstream, self.candidates, self.body)


class Translator(Protocol):
    """What the relay needs of translate: the decision for a message (the lookup, the
    blocklists, the marketing rule and the caps: translate.limits.Limits)."""

    def decide(self, virtual: str, caller: str, now: float, medium: str) -> Route | Refusal: ...


class Relay:
    """Coordinator between carrier binds, the queue and upstream binds (module docstring)."""

    def __init__(
        self,
        config: SmppConfig,
        store: Translator,
        plan: NumberPlan,
        queue: MessageQueue,
        records: SmsRecords,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.config = config
        self.store = store
        self.plan = plan
        self.queue = queue
        self.records = records
        self.loop = loop
        qc = config.queue
        self._max_pending = qc.max_pending
        self._default_validity = qc.default_validity
        self._max_validity = qc.max_validity
        self._retry_min = qc.retry_min
        self._retry_max = qc.retry_max
        self._max_unanswered = qc.max_unanswered
        limits = [u.max_pdu_size for u in config.upstreams if u.max_pdu_size is not None]
        #: the largest submit_sm body every upstream takes, or None
        self._max_body = min(limits) - 16 - _SEND_OVERHEAD if limits else None
        self._ready: deque[Message] = deque()
        # messages blamed for an unanswered send, past their retry delay: (due at, message)
        self._suspects: deque[tuple[float, Message]] = deque()
        self._lull_timer: asyncio.TimerHandle | None = None
        self._esme_ready: defaultdict[str, deque[Message]] = defaultdict(deque)
        self._esme_links: dict[str, list[EsmeLink]] = {}
        self._upstreams: list[UpstreamLink] = []
        self._answers: list[tuple[Any, int, int, int, str]] = []
        self._commit_scheduled = False
        self._pump_scheduled = False
        self._retry_handles: set[asyncio.TimerHandle] = set()
        self.depth = 0
        self.accepting = True
        self.sending = True
        # While an upstream is bound, carriers' submits are taken only as fast as the
        # upstream takes messages: past this many waiting, they are paced (module
        # docstring) instead of letting a standing queue add latency. With no upstream
        # bound, messages are stored up to queue.max_pending.
        self._backlog_high = qc.forward_backlog
        self._pacing = False
        self._pace_hold = config.server.pace_hold
        self._pace_queue = config.server.pace_queue
        self._waiting: dict[EsmeLink, deque[tuple[float, Pdu]]] = {}  # paced submits
        self._pace_timer: asyncio.TimerHandle | None = None
        self._hold_time = qc.receipt_hold
        self._hold_max = qc.receipt_hold_max
        self._held: dict[str, HeldReceipt] = {}  # by hold id, oldest first
        self._held_by_id: dict[str, list[str]] = {}  # candidate upstream id -> hold ids
        self._dropped_log = RateLimitedLog(log, "receipt_dropped")
        self._refused_log = RateLimitedLog(log, "upstream_refused")
        self._set_aside_log = RateLimitedLog(log, "set_aside")

    # -- start-up ---------------------------------------------------------------------

    def load(self) -> int:
        """Put every message the queue holds back in line (after a restart)."""
        n = 0
        for msg in self.queue.pending():
            self._enqueue(msg)
            n += 1
        m.QUEUE_DEPTH.set(self.depth)
        for hold_id, (at, upstream, candidates, body) in self.queue.held():
            self._index_held(HeldReceipt(hold_id, at, upstream, candidates, body))
        # A map committed with its receipt still held (never, unless written elsewhere).
        for held in list(self._held.values()):
            for candidate in held.candidates:
                found = self.queue.receipt_map(candidate)
                if found is not None and found[1] == held.upstream:
                    self._release(candidate, held.upstream)
                    break
        m.RECEIPTS_HELD.set(len(self._held))
        return n

    def _enqueue(self, msg: Message) -> None:
        self.depth += 1
        if msg.kind != TO_UPSTREAM:
            self._esme_ready[msg.target].append(msg)
        elif msg.info.get("u"):
            self._suspects.append((self.loop.time(), msg))
        else:
            self._ready.append(msg)

    # -- commit and answers -------------------------------------------------------------

    def _schedule_commit(self) -> None:
        if not self._commit_scheduled:
            self._commit_scheduled = True
            self.loop.call_soon(self._commit)

    def _answer_after_commit(
        self, link: Any, command_id: int, sequence: int, status: int, message_id: str
    ) -> None:
        self._answers.append((link, command_id, sequence, status, message_id))
        self._schedule_commit()

    def _commit(self) -> None:
        self._commit_scheduled = False
        try:
            self.queue.commit()
        except Exception:
            # Nothing staged is acknowledged: the senders will retry.
            log.exception("queue commit failed; answering this batch with ESME_RSYSERR")
            answers, self._answers = self._answers, []
            for link, cid, seq, _status, _mid in answers:
                link.session.respond_to(cid, seq, Status.RSYSERR, "")
                link.flush()
            return
        answers, self._answers = self._answers, []
        links = set()
        for link, cid, seq, status, mid in answers:
            link.session.respond_to(cid, seq, status, mid)
            links.add(link)
        for link in links:
            link.flush()
        m.QUEUE_DEPTH.set(self.depth)
        self._pump()

    def commit_now(self) -> None:
        """Commit and answer now (used when stopping)."""
        self._commit()

    # -- carrier side: submit_sm / data_sm ----------------------------------------------

    def on_submit(self, link: EsmeLink, pdu: Pdu) -> None:
        """A carrier's submit_sm or data_sm."""
        if self._pacing:
            self._wait(link, pdu)
            return
        cid, seq = pdu.command_id, pdu.sequence
        session = link.session
        if not self.accepting or self.depth >= self._max_pending:
            m.SUBMIT_THROTTLED.inc()
            session.respond_to(cid, seq, Status.RTHROTTLED)
            return
        if isinstance(pdu, DataSm):
            sm = from_data_sm(pdu, Cmd.SUBMIT_SM)
        else:
            assert isinstance(pdu, ShortMessage)
            sm = pdu
        now = time.time()
        caller = address_number(sm.source_addr_ton, sm.source_addr, self.plan)
        if isinstance(caller, NumberError):
            m.SUBMIT_INVALID.inc()
            session.respond_to(cid, seq, Status.RINVSRCADR)
            return
        virtual = address_number(sm.dest_addr_ton, sm.destination_addr, self.plan)
        if isinstance(virtual, NumberError):
            m.SUBMIT_INVALID.inc()
            session.respond_to(cid, seq, Status.RINVDSTADR)
            return
        try:
            validity = parse_smpp_time(sm.validity_period, now)
        except ValueError:
            m.SUBMIT_INVALID.inc()
            session.respond_to(cid, seq, Status.RINVEXPIRY)
            return
        expires = now + self._max_validity
        if validity is None:
            expires = now + self._default_validity
        elif validity < expires:
            expires = validity
        route = self.store.decide(virtual, caller, now, SMS)
        msg_id = self.queue.new_id()
        info = concat_info(sm)
        part = f"{info.seq}/{info.total}" if info is not None else None
        if isinstance(route, Refusal):
            status = REFUSAL_STATUS.get(route.reason, Status.RX_P_APPN)
            m.SUBMIT_REFUSED.inc()
            session.respond_to(cid, seq, status)
            self.records.refused(
                (
                    msg_id,
                    "mt",
                    link.system_id,
                    caller,
                    virtual,
                    None,
                    None,
                    route.binding_id,
                    sm.data_coding,
                    user_data_length(sm),
                    part,
                    now,
                    "refused",
                    status,
                ),
                route.reason,
            )
            return
        sm.command_id = Cmd.SUBMIT_SM
        sm.sequence = 0
        set_addresses(sm, route.present, route.callee)
        sm.tlvs = filter_tlvs(sm.tlvs, MESSAGE_TLVS)
        if info is not None:
            rewrite_ref(sm, caller)
        registered = sm.registered_delivery & 0x03
        body = encode_short_message_body(sm)
        details = {"s": link.system_id, "c": caller, "x": virtual, "r": registered}
        if self._max_body is not None and len(body) > self._max_body:
            if not self._stage_parts(sm, msg_id, now, expires, details):
                m.SUBMIT_INVALID.inc()
                session.respond_to(cid, seq, Status.RINVMSGLEN)
                self.records.accepted(
                    (
                        msg_id,
                        "mt",
                        link.system_id,
                        caller,
                        virtual,
                        route.callee,
                        route.present,
                        route.binding_id,
                        sm.data_coding,
                        user_data_length(sm),
                        part,
                        now,
                        "refused",
                        Status.RINVMSGLEN,
                    )
                )
                return
        else:
            msg = Message(msg_id, TO_UPSTREAM, "", Cmd.SUBMIT_SM, body, now, expires, details)
            self.queue.stage_put(msg)
            self._enqueue(msg)
        m.SUBMIT_ACCEPTED.inc()
        self.records.accepted(
            (
                msg_id,
                "mt",
                link.system_id,
                caller,
                virtual,
                route.callee,
                route.present,
                route.binding_id,
                sm.data_coding,
                user_data_length(sm),
                part,
                now,
                "queued",
                None,
            )
        )
        self._answer_after_commit(link, cid, seq, 0, msg_id)
        if len(self._ready) > self._backlog_high and self._upstreams:
            self._pacing = True

    def _stage_parts(
        self, sm: ShortMessage, parent: str, now: float, expires: float, info: dict[str, Any]
    ) -> bool:
        """Queue ``sm`` as concatenated parts under the sender's id ``parent``."""
        max_body = self._max_body
        assert max_body is not None
        parts = split_payload(sm, derived_ref(info["c"], int(parent, 16), 8))
        if parts is None:
            return False
        bodies = [encode_short_message_body(p) for p in parts]
        if max(len(b) for b in bodies) > max_body:
            return False
        total = len(bodies)
        for k, body in enumerate(bodies, 1):
            msg = Message(
                self.queue.new_id(),
                TO_UPSTREAM,
                "",
                Cmd.SUBMIT_SM,
                body,
                now,
                expires,
                {**info, "p": parent, "k": k, "n": total},
            )
            self.queue.stage_put(msg)
            self._enqueue(msg)
        m.SPLIT.inc()
        return True

    def _wait(self, link: EsmeLink, pdu: Pdu) -> None:
        """Pacing: the submit waits, unanswered and unstored, for room (or its deadline)."""
        waiting = self._waiting.get(link)
        if waiting is None:
            waiting = self._waiting[link] = deque()
        if len(waiting) >= self._pace_queue:
            m.SUBMIT_THROTTLED.inc()
            link.session.respond_to(pdu.command_id, pdu.sequence, Status.RTHROTTLED)
            link.flush()
            return
        waiting.append((self.loop.time() + self._pace_hold, pdu))
        m.SUBMITS_WAITING.inc()
        if self._pace_timer is None:
            self._pace_timer = self.loop.call_later(min(0.1, self._pace_hold), self._pace_tick)

    def _pace_tick(self) -> None:
        """Answer ESME_RTHROTTLED to the submits that waited past server.pace_hold."""
        self._pace_timer = None
        now = self.loop.time()
        for link, waiting in list(self._waiting.items()):
            throttled = 0
            while waiting and waiting[0][0] <= now:
                _deadline, pdu = waiting.popleft()
                link.session.respond_to(pdu.command_id, pdu.sequence, Status.RTHROTTLED)
                throttled += 1
            if throttled:
                m.SUBMIT_THROTTLED.inc(throttled)
                m.SUBMITS_WAITING.dec(throttled)
                link.flush()
            if not waiting:
                del self._waiting[link]
        if self._waiting:
            self._pace_timer = self.loop.call_later(min(0.1, self._pace_hold), self._pace_tick)

    def _stop_pacing(self) -> None:
        """Room again: take the waiting submits in arrival order per bind, bind by bind in
        turn, until the backlog is full again."""
        self._pacing = False
        waiting = self._waiting
        touched = set()
        while waiting and not self._pacing:
            for link in list(waiting):
                queue = waiting[link]
                _deadline, pdu = queue.popleft()
                m.SUBMITS_WAITING.dec()
                if not queue:
                    del waiting[link]
                if link.session.state is not State.CLOSED:
                    self.on_submit(link, pdu)
                    touched.add(link)
                if self._pacing:
                    break
        for link in touched:
            link.flush()  # refusals answered at once (the others after their commit)

    # -- upstream side ------------------------------------------------------------------

    def upstream_up(self, link: UpstreamLink) -> None:
        self._upstreams.append(link)
        self._upstreams.sort(key=lambda u: u.config.priority)
        m.BINDS.labels("upstream").set(len(self._upstreams))
        self._pump()

    def upstream_down(
        self, link: UpstreamLink, unanswered: list[Message], blame: bool = False
    ) -> None:
        """A bind to an upstream ended; what it had not answered goes first in line again,
        but for the oldest unanswered request of a link lost abruptly (``blame``), which
        counts as an unanswered send and waits as a suspect."""
        if link in self._upstreams:
            self._upstreams.remove(link)
        m.BINDS.labels("upstream").set(len(self._upstreams))
        if blame and unanswered and self.sending:
            self._unanswered(link, unanswered[0])
            unanswered = unanswered[1:]
        for msg in reversed(unanswered):
            self._ready.appendleft(msg)
        if not self._upstreams and self._pacing:
            self._stop_pacing()  # store and forward until one is back
        self._pump()

    def on_upstream_response(self, link: UpstreamLink, pdu: Pdu, msg: Message) -> None:
        status = pdu.status
        now = time.time()
        if status == 0 and isinstance(pdu, MessageResp):
            m.UP_OK.inc()
            m.RELAY_LATENCY.observe(now - msg.created)
            self.depth -= 1
            self.queue.stage_delete(msg.id)
            info = msg.info
            parent = info.get("p")
            if info["r"] and pdu.message_id:
                value: tuple[Any, ...] = (parent or msg.id, info["s"], info["c"], info["x"])
                if parent is not None:
                    value += (info["k"], info["n"], msg.created)
                self.queue.stage_receipt_map(link.name, pdu.message_id, value, now)
            self.records.submitted(parent or msg.id, link.name, pdu.message_id, now)
            if self._held_by_id and pdu.message_id in self._held_by_id:
                self._release(pdu.message_id, link.name)
            self._schedule_commit()
        elif status in TRANSIENT_STATUSES:
            m.UP_RETRY.inc()
            self._retry(msg)
        else:
            m.UP_FAILED.inc()
            self._refused_log.warning(
                "upstream %s refused message %s with status 0x%x", link.name, msg.id, status
            )
            self._finish(msg, "failed", status, MessageState.REJECTED, now)
        self._schedule_pump()

    def _lull_over(self) -> None:
        self._lull_timer = None
        self._pump()

    def suspect_back(self, msg: Message) -> None:
        """A probe could not send its suspect: first in the suspects' line again."""
        if self.sending:
            self._suspects.appendleft((self.loop.time(), msg))

    def probe_lost(self, link: UpstreamLink, msg: Message) -> None:
        """A probe bind went down with its suspect unanswered: an unanswered send."""
        if self.sending:
            self._unanswered(link, msg)
            self._schedule_pump()

    def on_upstream_timeout(self, link: UpstreamLink, msg: Message, counts: bool) -> None:
        """No answer to ``msg``; ``counts``: the upstream passed over it (answering others)."""
        if counts:
            self._unanswered(link, msg)
        else:
            m.UP_RETRY.inc()  # the upstream answered nothing newer: not this message's fault
            self._retry(msg)
        self._schedule_pump()

    def _unanswered(self, link: UpstreamLink, msg: Message) -> None:
        """A send of ``msg`` got no answer: count it; set the message aside after N."""
        tries = msg.info.get("u", 0) + 1
        msg.info["u"] = tries
        if tries >= self._max_unanswered:
            m.UP_SET_ASIDE.inc()
            self._set_aside_log.warning(
                "message %s set aside after %d sends to upstream without an answer (last %s)",
                msg.id,
                tries,
                link.name,
            )
            self._finish(msg, "rejected", None, MessageState.REJECTED, time.time())
            return
        m.UP_RETRY.inc()
        self.queue.stage_put(msg)  # the count survives a restart
        self._schedule_commit()
        self._retry(msg)

    def _finish(self, msg: Message, status: str, error: int | None, state: int, now: float) -> None:
        """A message that will not be delivered: drop it, record why, tell its sender."""
        self.depth -= 1
        self.queue.stage_delete(msg.id)
        info = msg.info
        parent = info.get("p")
        if parent is not None:
            # one part failed: so did the message, for the sender
            self.records.finished(parent, status, error, now)
            if info.get("r"):
                self._part_receipt(
                    parent,
                    info["k"],
                    info["n"],
                    state,
                    info["s"],
                    info["c"],
                    info["x"],
                    msg.created,
                    now,
                )
        else:
            self.records.finished(msg.id, status, error, now)
            if msg.kind == TO_UPSTREAM and info.get("r"):
                self._queue_receipt(
                    msg.id, info["s"], info["x"], info["c"], state, msg.created, now, None
                )
        self._schedule_commit()

    def _retry(self, msg: Message) -> None:
        msg.attempts += 1
        delay = min(self._retry_max, self._retry_min * (2 ** min(msg.attempts - 1, 16)))
        handle = self.loop.call_later(delay, self._requeue, msg)
        self._retry_handles.add(handle)

    def _requeue(self, msg: Message) -> None:
        self._retry_handles = {
            h for h in self._retry_handles if not h.cancelled() and h.when() > self.loop.time()
        }
        if msg.kind != TO_UPSTREAM:
            self._esme_ready[msg.target].append(msg)
        elif msg.info.get("u"):
            self._suspects.append((self.loop.time(), msg))
        else:
            self._ready.append(msg)
        self._pump()

    def schedule_pump(self) -> None:
        """Pump on the next loop turn (a link can take messages again)."""
        self._schedule_pump()

    def _schedule_pump(self) -> None:
        if not self._pump_scheduled:
            self._pump_scheduled = True
            self.loop.call_soon(self._pump)

    def _pump(self) -> None:
        self._pump_scheduled = False
        if not self.sending:
            return
        if (self._ready or self._suspects) and self._upstreams:
            self._pump_upstream()
        if self._esme_ready:
            self._pump_esme()

    def _pump_upstream(self) -> None:
        if not self._suspects:
            for link in self._upstreams:
                if link.isolating == "draining":  # its suspect went elsewhere or expired
                    link.isolating = ""
        best = self._upstreams[0].config.priority
        links = [u for u in self._upstreams if u.config.priority == best and u.has_window()]
        ready = self._ready
        now = time.time()
        loop_now = self.loop.time()
        while ready and links:
            for link in list(links):
                if not ready:
                    break
                msg = ready.popleft()
                if msg.expires <= now:
                    m.UP_EXPIRED.inc()
                    self._finish(msg, "expired", None, MessageState.EXPIRED, now)
                    continue
                if link.max_body is not None and len(msg.body) > link.max_body:
                    # stored before this upstream's max_pdu_size was set
                    m.UP_FAILED.inc()
                    self._finish(msg, "failed", Status.RINVMSGLEN, MessageState.REJECTED, now)
                    continue
                link.submit(msg, loop_now)
                if not link.has_window():
                    links.remove(link)
        if self._suspects:
            self._pump_suspect(best, now, loop_now)
        for link in self._upstreams:
            link.flush()
        if self._pacing and len(ready) <= self._backlog_high // 2:
            self._stop_pacing()

    def _pump_suspect(self, best: int, now: float, loop_now: float) -> None:
        """Send the next suspect alone: on a probe bind, or on a drained link."""
        due_at, msg = self._suspects[0]
        links = [u for u in self._upstreams if u.config.priority == best and u.session.bound]
        if not links:
            return
        connector = links[0].connector
        if connector is not None and not connector.probe_refused:
            if connector.probing:
                return
            self._suspects.popleft()
            if msg.expires <= now:
                m.UP_EXPIRED.inc()
                self._finish(msg, "expired", None, MessageState.EXPIRED, now)
                return
            connector.probe(msg)
            return
        # No probe bind at this upstream: alone on the main link, in a lull.
        if any(u.isolating == "probing" for u in links):
            return
        link = next((u for u in links if u.isolating == "draining"), None)
        if link is None:
            if self._ready and loop_now - due_at < self._retry_max:
                if self._lull_timer is None:  # look again then, lull or not
                    self._lull_timer = self.loop.call_at(due_at + self._retry_max, self._lull_over)
                return
            link = links[0]
        if link.session.outstanding:
            link.isolating = "draining"  # takes nothing new; its answers pump again
            return
        self._suspects.popleft()
        if msg.expires <= now:
            m.UP_EXPIRED.inc()
            self._finish(msg, "expired", None, MessageState.EXPIRED, now)
            return
        link.submit_alone(msg, loop_now)

    # -- receipts and mobile-originated messages from upstream ----------------------------

    def on_upstream_deliver(self, link: UpstreamLink, pdu: Pdu) -> None:
        """A deliver_sm or data_sm from upstream: a receipt, or an SMS to a virtual number."""
        cid, seq = pdu.command_id, pdu.sequence
        if isinstance(pdu, DataSm):
            sm = from_data_sm(pdu, Cmd.DELIVER_SM)
        else:
            assert isinstance(pdu, ShortMessage)
            sm = pdu
        status = self._on_receipt(link, sm) if is_receipt(sm) else self._on_mo(link, sm)
        if status is None:
            self._answer_after_commit(link, cid, seq, 0, "")
        else:
            link.session.respond_to(cid, seq, status)

    def _on_receipt(self, link: UpstreamLink, sm: ShortMessage) -> int | None:
        candidates = receipt_ids(sm)
        for candidate in candidates:
            found = self.queue.receipt_map(candidate)
            if found is not None:
                if not self.accepting or self.depth >= self._max_pending:
                    return Status.RTHROTTLED
                self._route_receipt(sm, found, time.time())
                return None
        if not candidates:
            m.RECEIPT_UNMATCHED.inc()
            self._dropped_log.warning(
                "receipt from upstream %s carries no message id: dropped", link.name
            )
            return 0
        # Not mapped (yet): its submit_sm_resp may still be on its way. Hold it on disk.
        if not self.accepting:
            return Status.RTHROTTLED
        while len(self._held) >= self._hold_max:
            oldest = next(iter(self._held.values()))
            self._drop_held(oldest, "evicted")
        sm.sequence = 0
        held = HeldReceipt(
            self.queue.new_id(), time.time(), link.name, candidates, encode_short_message_body(sm)
        )
        self.queue.stage_hold(held.id, held.value())
        self._index_held(held)
        m.RECEIPTS.labels("held").inc()
        m.RECEIPTS_HELD.set(len(self._held))
        return None

    def _route_receipt(self, sm: ShortMessage, found: tuple[Any, ...], now: float) -> None:
        """Turn a mapped receipt into a deliver_sm for the sender and queue it."""
        _at, _upstream, our_id, system_id, caller, virtual = found[:6]
        state = receipt_state(sm)
        m.RECEIPT_MAPPED.inc()
        if len(found) > 6:  # a part of a message ansim split: one receipt for the whole
            k, total, created = found[6:9]
            self._part_receipt(our_id, k, total, state, system_id, caller, virtual, created, now)
            return
        self.records.receipt(our_id, _FINAL_STATUS.get(state, "submitted"), state, now)
        rewrite_receipt(sm, our_id)
        sm.tlvs = filter_tlvs(sm.tlvs, RECEIPT_TLVS)
        sm.command_id = Cmd.DELIVER_SM
        set_addresses(sm, virtual, caller)
        self._stage_to_esme(system_id, sm, now, {"s": system_id, "receipt": our_id})

    # -- receipts held until their id is mapped ----------------------------------------------

    def _index_held(self, held: HeldReceipt) -> None:
        self._held[held.id] = held
        for candidate in held.candidates:
            self._held_by_id.setdefault(candidate, []).append(held.id)

    def _unindex_held(self, held: HeldReceipt) -> None:
        del self._held[held.id]
        self.queue.stage_hold_delete(held.id)
        for candidate in held.candidates:
            ids = self._held_by_id.get(candidate)
            if ids is not None:
                if held.id in ids:
                    ids.remove(held.id)
                if not ids:
                    del self._held_by_id[candidate]

    def _release(self, upstream_id: str, upstream: str) -> None:
        """The map of ``upstream_id`` is staged: deliver the receipts held for it."""
        now = time.time()
        for hold_id in list(self._held_by_id.get(upstream_id, ())):
            held = self._held[hold_id]
            if held.upstream != upstream:
                continue  # ids are only unique per upstream
            self._unindex_held(held)
            found = self.queue.receipt_map(upstream_id)
            if found is None:
                m.RECEIPTS.labels("not_requested").inc()  # the sender asked for none
                continue
            pdu = decode(encode_frame(Cmd.DELIVER_SM, 0, 0, held.body))
            assert isinstance(pdu, ShortMessage)
            self._route_receipt(pdu, found, now)
        m.RECEIPTS_HELD.set(len(self._held))
        self._schedule_commit()

    def _drop_held(self, held: HeldReceipt, why: str) -> None:
        self._unindex_held(held)
        m.RECEIPTS.labels(why).inc()
        self._dropped_log.warning(
            "receipt from upstream %s for id %s matched no message within %s: dropped (%s)",
            held.upstream,
            held.candidates[0],
            f"{self._hold_time:g} s" if why == "unmatched" else "the hold's room",
            why,
        )
        self._schedule_commit()

    def sweep_held(self, now: float) -> int:
        """Drop held receipts past ``queue.receipt_hold``; returns how many."""
        cutoff = now - self._hold_time
        dropped = 0
        while self._held:
            oldest = next(iter(self._held.values()))
            if oldest.at > cutoff:
                break
            self._drop_held(oldest, "unmatched")
            dropped += 1
        if dropped:
            m.RECEIPTS_HELD.set(len(self._held))
        return dropped

    def _part_receipt(
        self,
        parent: str,
        k: int,
        total: int,
        state: int,
        system_id: str,
        caller: str,
        virtual: str,
        created: float,
        now: float,
    ) -> None:
        """A part's final state: write the sender's receipt once the whole is decided."""
        if state not in _FINAL_STATES:
            return  # an intermediate notice of one part says nothing of the whole
        found = self.queue.split_state(parent)
        at, states, done = found if found is not None else (now, {}, False)
        states[k] = state
        if done:
            pass  # the sender was told already (a part failed)
        elif state != MessageState.DELIVERED or (
            len(states) == total and all(v == MessageState.DELIVERED for v in states.values())
        ):
            done = True
            self.records.receipt(parent, _FINAL_STATUS.get(state, "submitted"), state, now)
            self._queue_receipt(parent, system_id, virtual, caller, state, created, now, None)
        if len(states) == total:
            self.queue.stage_split(parent, None)  # every part heard from: forget it
        else:
            self.queue.stage_split(parent, (at, states, done))
        self._schedule_commit()

    def _queue_receipt(
        self,
        our_id: str,
        system_id: str,
        virtual: str,
        caller: str,
        state: int,
        submitted: float,
        now: float,
        err: int | None,
    ) -> None:
        """A receipt ansim writes itself (message expired or refused upstream)."""
        sm = ShortMessage(
            Cmd.DELIVER_SM,
            esm_class=EsmClass.DELIVERY_RECEIPT,
            short_message=make_receipt_text(our_id, state, submitted, now, err or 0),
            tlvs={Tag.RECEIPTED_MESSAGE_ID: cstr_tlv(our_id), Tag.MESSAGE_STATE: bytes((state,))},
        )
        set_addresses(sm, virtual, caller)
        self._stage_to_esme(system_id, sm, now, {"s": system_id, "receipt": our_id})

    def _on_mo(self, link: UpstreamLink, sm: ShortMessage) -> int | None:
        target = self.config.server.mo_system_id
        if target is None:
            m.MO.labels("no_route").inc()
            return Status.RX_P_APPN
        if not self.accepting or self.depth >= self._max_pending:
            return Status.RTHROTTLED
        now = time.time()
        caller = address_number(sm.source_addr_ton, sm.source_addr, self.plan)
        virtual = address_number(sm.dest_addr_ton, sm.destination_addr, self.plan)
        if isinstance(caller, NumberError):
            return Status.RINVSRCADR
        if isinstance(virtual, NumberError):
            return Status.RINVDSTADR
        route = self.store.decide(virtual, caller, now, SMS)
        if isinstance(route, Refusal):
            m.MO.labels("refused").inc()
            return REFUSAL_STATUS.get(route.reason, Status.RX_P_APPN)
        m.MO.labels("accepted").inc()
        info = concat_info(sm)
        set_addresses(sm, route.present, route.callee)
        sm.tlvs = filter_tlvs(sm.tlvs, MESSAGE_TLVS)
        if info is not None:
            rewrite_ref(sm, caller)
        msg = self._stage_to_esme(target, sm, now, {"s": target})
        self.records.accepted(
            (
                msg.id,
                "mo",
                link.name,
                caller,
                virtual,
                route.callee,
                route.present,
                route.binding_id,
                sm.data_coding,
                user_data_length(sm),
                f"{info.seq}/{info.total}" if info else None,
                now,
                "queued",
                None,
            )
        )
        return None

    def _stage_to_esme(
        self, system_id: str, sm: ShortMessage, now: float, info: dict[str, Any]
    ) -> Message:
        sm.sequence = 0
        msg = Message(
            self.queue.new_id(),
            TO_ESME,
            system_id,
            Cmd.DELIVER_SM,
            encode_short_message_body(sm),
            now,
            now + self._max_validity,
            info,
        )
        self.queue.stage_put(msg)
        self._enqueue(msg)
        return msg

    # -- carrier side: deliveries to receivers ------------------------------------------

    def esme_up(self, link: EsmeLink) -> None:
        if link.receives:
            self._esme_links.setdefault(link.system_id, []).append(link)
            self._schedule_pump()

    def esme_down(self, link: EsmeLink, unanswered: list[Message]) -> None:
        waiting = self._waiting.pop(link, None)
        if waiting:
            m.SUBMITS_WAITING.dec(len(waiting))  # never answered: the carrier sends again
        links = self._esme_links.get(link.system_id)
        if links and link in links:
            links.remove(link)
            if not links:
                del self._esme_links[link.system_id]
        if unanswered:
            dq = self._esme_ready[link.system_id]
            for msg in reversed(unanswered):
                dq.appendleft(msg)
            self._schedule_pump()

    def on_esme_response(self, link: EsmeLink, pdu: Pdu, msg: Message) -> None:
        status = pdu.status
        now = time.time()
        if status == 0:
            m.ESME_DELIVERIES.labels("ok").inc()
            self.depth -= 1
            self.queue.stage_delete(msg.id)
            self._schedule_commit()
        elif status in TRANSIENT_STATUSES:
            m.ESME_DELIVERIES.labels("retry").inc()
            self._retry(msg)
        else:
            m.ESME_DELIVERIES.labels("failed").inc()
            self._finish(msg, "failed", status, MessageState.UNDELIVERABLE, now)
        self._schedule_pump()

    def on_esme_timeout(self, link: EsmeLink, msg: Message) -> None:
        m.ESME_DELIVERIES.labels("retry").inc()
        self._retry(msg)

    def _pump_esme(self) -> None:
        now = time.time()
        loop_now = self.loop.time()
        touched = set()
        for system_id, dq in self._esme_ready.items():
            links = self._esme_links.get(system_id)
            if not dq or not links:
                continue
            open_links = [lk for lk in links if lk.has_window()]
            while dq and open_links:
                for link in list(open_links):
                    if not dq:
                        break
                    msg = dq.popleft()
                    if msg.expires <= now:
                        self._finish(msg, "expired", None, MessageState.EXPIRED, now)
                        continue
                    link.deliver(msg, loop_now)
                    touched.add(link)
                    if not link.has_window():
                        open_links.remove(link)
        for link in touched:
            link.flush()

    def sweep_expired(self, now: float) -> int:
        """Drop messages past their validity that wait with no live bind to take them.

        (Where a bind is live, the pump drops them as it reaches them.)
        """
        dropped = 0
        if not self._upstreams and self._ready:
            keep: deque[Message] = deque()
            for msg in self._ready:
                if msg.expires <= now:
                    m.UP_EXPIRED.inc()
                    self._finish(msg, "expired", None, MessageState.EXPIRED, now)
                    dropped += 1
                else:
                    keep.append(msg)
            self._ready = keep
        if not self._upstreams and self._suspects:
            waiting: deque[tuple[float, Message]] = deque()
            for due_at, msg in self._suspects:
                if msg.expires <= now:
                    m.UP_EXPIRED.inc()
                    self._finish(msg, "expired", None, MessageState.EXPIRED, now)
                    dropped += 1
                else:
                    waiting.append((due_at, msg))
            self._suspects = waiting
        for system_id, dq in self._esme_ready.items():
            if dq and not self._esme_links.get(system_id):
                kept = deque(msg for msg in dq if msg.expires > now)
                for msg in dq:
                    if msg.expires <= now:
                        self._finish(msg, "expired", None, MessageState.EXPIRED, now)
                        dropped += 1
                self._esme_ready[system_id] = kept
        if dropped:
            self._schedule_pump()
        return dropped

    # -- stopping ---------------------------------------------------------------------------

    def stop_accepting(self) -> None:
        """Refuse new submits (ESME_RTHROTTLED), those waiting for room too."""
        self.accepting = False
        if self._pace_timer is not None:
            self._pace_timer.cancel()
            self._pace_timer = None
        self._stop_pacing()

    def stop_sending(self) -> None:
        self.sending = False

    def cancel_retries(self) -> None:
        for handle in self._retry_handles:
            handle.cancel()
        self._retry_handles.clear()
        if self._lull_timer is not None:
            self._lull_timer.cancel()
            self._lull_timer = None

    def in_flight(self) -> int:
        return sum(u.session.outstanding for u in self._upstreams)
