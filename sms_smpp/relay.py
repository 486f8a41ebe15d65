"""The relay: what happens to a message between the carrier side and the upstream side.

It owns the store-and-forward queue and decides, for each event the links report:
translate and store a carrier's submit_sm (answering it only once it is on disk),
pump stored messages to the preferred live upstream within its window, retry on
transient failures until the message's validity ends, map each upstream message id to
the sender's, and turn the upstream's delivery receipts and mobile-originated messages
into deliver_sm for the right carrier bind (stored first, like everything else).

Disk writes are grouped: everything staged during one event-loop turn is committed in
one LMDB transaction by :meth:`Relay._commit`, and the answers that depend on it are
sent right after.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict, deque
from typing import TYPE_CHECKING, Any, Protocol

from translate.bindings import Refusal, Route
from translate.limits import SMS
from translate.numbers import NumberError, NumberPlan

from . import metrics as m
from .concat import concat_info, rewrite_ref
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
    encode_short_message_body,
)
from .queue import TO_ESME, TO_UPSTREAM, Message, MessageQueue
from .records import SmsRecords
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

_FINAL_STATUS = {
    MessageState.DELIVERED: "delivered",
    MessageState.EXPIRED: "expired",
    MessageState.DELETED: "deleted",
    MessageState.UNDELIVERABLE: "undeliverable",
    MessageState.REJECTED: "rejected",
    MessageState.UNKNOWN: "unknown",
}


class Translator(Protocol):
    """What the relay needs of translate: the decision for a message (the lookup, the
    blocklists, the marketing rule and the caps: translate.limits.Limits)."""

    def decide(self, virtual: str, caller: str, now: float, medium: str) -> Route | Refusal: ...


class Relay:
    """Coordinator between carrier binds, the queue and upstream binds (module docstring)."""

    def __init__(self, config: SmppConfig, store: Translator, plan: NumberPlan,
                 queue: MessageQueue, records: SmsRecords,
                 loop: asyncio.AbstractEventLoop) -> None:
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
        self._ready: deque[Message] = deque()
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
        # While an upstream is bound, carriers are read only as fast as the upstream takes
        # messages: past this many waiting, reading pauses (TCP pushes back on the
        # carrier) instead of letting a standing queue add latency. With no upstream
        # bound, messages are stored up to queue.max_pending.
        self._backlog_high = qc.forward_backlog
        self._carriers: set[EsmeLink] = set()
        self._reading_paused = False

    # -- start-up ---------------------------------------------------------------------

    def load(self) -> int:
        """Put every message the queue holds back in line (after a restart)."""
        n = 0
        for msg in self.queue.pending():
            self._enqueue(msg)
            n += 1
        m.QUEUE_DEPTH.set(self.depth)
        return n

    def _enqueue(self, msg: Message) -> None:
        self.depth += 1
        if msg.kind == TO_UPSTREAM:
            self._ready.append(msg)
        else:
            self._esme_ready[msg.target].append(msg)

    # -- commit and answers -------------------------------------------------------------

    def _schedule_commit(self) -> None:
        if not self._commit_scheduled:
            self._commit_scheduled = True
            self.loop.call_soon(self._commit)

    def _answer_after_commit(self, link: Any, command_id: int, sequence: int, status: int,
                             message_id: str) -> None:
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
            self.records.refused((msg_id, "mt", link.system_id, caller, virtual, None, None,
                                  route.binding_id, sm.data_coding, user_data_length(sm),
                                  part, now, "refused", status), route.reason)
            return
        sm.command_id = Cmd.SUBMIT_SM
        sm.sequence = 0
        set_addresses(sm, route.present, route.callee)
        sm.tlvs = filter_tlvs(sm.tlvs, MESSAGE_TLVS)
        if info is not None:
            rewrite_ref(sm, caller)
        registered = sm.registered_delivery & 0x03
        body = encode_short_message_body(sm)
        msg = Message(msg_id, TO_UPSTREAM, "", Cmd.SUBMIT_SM, body, now, expires,
                      {"s": link.system_id, "c": caller, "x": virtual, "r": registered})
        self.queue.stage_put(msg)
        self._enqueue(msg)
        m.SUBMIT_ACCEPTED.inc()
        self.records.accepted((msg_id, "mt", link.system_id, caller, virtual, route.callee,
                               route.present, route.binding_id, sm.data_coding,
                               user_data_length(sm), part, now, "queued", None))
        self._answer_after_commit(link, cid, seq, 0, msg_id)
        if len(self._ready) > self._backlog_high and self._upstreams:
            self._pause_carriers()

    def _pause_carriers(self) -> None:
        if not self._reading_paused:
            self._reading_paused = True
            for link in self._carriers:
                if link.transport is not None:
                    link.transport.pause_reading()

    def _resume_carriers(self) -> None:
        if self._reading_paused:
            self._reading_paused = False
            if not self.accepting:
                return
            for link in self._carriers:
                if link.transport is not None:
                    link.transport.resume_reading()

    # -- upstream side ------------------------------------------------------------------

    def upstream_up(self, link: UpstreamLink) -> None:
        self._upstreams.append(link)
        self._upstreams.sort(key=lambda u: u.config.priority)
        m.BINDS.labels("upstream").set(len(self._upstreams))
        self._pump()

    def upstream_down(self, link: UpstreamLink, unanswered: list[Message]) -> None:
        """A bind to an upstream ended; what it had not answered goes first in line again."""
        if link in self._upstreams:
            self._upstreams.remove(link)
        m.BINDS.labels("upstream").set(len(self._upstreams))
        for msg in reversed(unanswered):
            self._ready.appendleft(msg)
        if not self._upstreams:
            self._resume_carriers()  # store and forward until one is back
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
            if info["r"] and pdu.message_id:
                self.queue.stage_receipt_map(link.name, pdu.message_id,
                                             (msg.id, info["s"], info["c"], info["x"]), now)
            self.records.submitted(msg.id, link.name, pdu.message_id, now)
            self._schedule_commit()
        elif status in TRANSIENT_STATUSES:
            m.UP_RETRY.inc()
            self._retry(msg)
        else:
            m.UP_FAILED.inc()
            log.warning("upstream %s refused message %s with status 0x%x",
                        link.name, msg.id, status)
            self._finish(msg, "failed", status, MessageState.REJECTED, now)
        self._schedule_pump()

    def on_upstream_timeout(self, link: UpstreamLink, msg: Message) -> None:
        m.UP_RETRY.inc()
        self._retry(msg)
        self._schedule_pump()

    def _finish(self, msg: Message, status: str, error: int | None, state: int,
                now: float) -> None:
        """A message that will not be delivered: drop it, record why, tell its sender."""
        self.depth -= 1
        self.queue.stage_delete(msg.id)
        self.records.finished(msg.id, status, error, now)
        info = msg.info
        if msg.kind == TO_UPSTREAM and info.get("r"):
            self._queue_receipt(msg.id, info["s"], info["x"], info["c"], state, msg.created,
                                now, None)
        self._schedule_commit()

    def _retry(self, msg: Message) -> None:
        msg.attempts += 1
        delay = min(self._retry_max, self._retry_min * (2 ** min(msg.attempts - 1, 16)))
        handle = self.loop.call_later(delay, self._requeue, msg)
        self._retry_handles.add(handle)

    def _requeue(self, msg: Message) -> None:
        self._retry_handles = {h for h in self._retry_handles if not h.cancelled()
                               and h.when() > self.loop.time()}
        if msg.kind == TO_UPSTREAM:
            self._ready.append(msg)
        else:
            self._esme_ready[msg.target].append(msg)
        self._pump()

    def _schedule_pump(self) -> None:
        if not self._pump_scheduled:
            self._pump_scheduled = True
            self.loop.call_soon(self._pump)

    def _pump(self) -> None:
        self._pump_scheduled = False
        if not self.sending:
            return
        if self._ready and self._upstreams:
            self._pump_upstream()
        if self._esme_ready:
            self._pump_esme()

    def _pump_upstream(self) -> None:
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
                link.submit(msg, loop_now)
                if not link.has_window():
                    links.remove(link)
        for link in self._upstreams:
            link.flush()
        if self._reading_paused and len(ready) <= self._backlog_high // 2:
            self._resume_carriers()

    # -- receipts and mobile-originated messages from upstream ----------------------------

    def on_upstream_deliver(self, link: UpstreamLink, pdu: Pdu) -> None:
        """A deliver_sm or data_sm from upstream: a receipt, or an SMS to a virtual number."""
        cid, seq = pdu.command_id, pdu.sequence
        if isinstance(pdu, DataSm):
            sm = from_data_sm(pdu, Cmd.DELIVER_SM)
        else:
            assert isinstance(pdu, ShortMessage)
            sm = pdu
        status = self._on_receipt(sm) if is_receipt(sm) else self._on_mo(link, sm)
        if status is None:
            self._answer_after_commit(link, cid, seq, 0, "")
        else:
            link.session.respond_to(cid, seq, status)

    def _on_receipt(self, sm: ShortMessage) -> int | None:
        now = time.time()
        found = None
        for candidate in receipt_ids(sm):
            found = self.queue.receipt_map(candidate)
            if found is not None:
                break
        if found is None:
            # Not ours to route (expired map, or never asked for): accept and drop.
            m.RECEIPTS.labels("unknown").inc()
            return 0
        _at, _upstream, our_id, system_id, caller, virtual = found[:6]
        state = receipt_state(sm)
        m.RECEIPTS.labels("mapped").inc()
        self.records.receipt(our_id, _FINAL_STATUS.get(state, "submitted"), state, now)
        if not self.accepting or self.depth >= self._max_pending:
            return Status.RTHROTTLED
        rewrite_receipt(sm, our_id)
        sm.tlvs = filter_tlvs(sm.tlvs, RECEIPT_TLVS)
        sm.command_id = Cmd.DELIVER_SM
        set_addresses(sm, virtual, caller)
        self._stage_to_esme(system_id, sm, now, {"s": system_id, "receipt": our_id})
        return None

    def _queue_receipt(self, our_id: str, system_id: str, virtual: str, caller: str,
                       state: int, submitted: float, now: float, err: int | None) -> None:
        """A receipt ansim writes itself (message expired or refused upstream)."""
        sm = ShortMessage(Cmd.DELIVER_SM, esm_class=EsmClass.DELIVERY_RECEIPT,
                          short_message=make_receipt_text(our_id, state, submitted, now,
                                                          err or 0),
                          tlvs={Tag.RECEIPTED_MESSAGE_ID: cstr_tlv(our_id),
                                Tag.MESSAGE_STATE: bytes((state,))})
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
        self.records.accepted((msg.id, "mo", link.name, caller, virtual, route.callee,
                               route.present, route.binding_id, sm.data_coding,
                               user_data_length(sm),
                               f"{info.seq}/{info.total}" if info else None, now, "queued",
                               None))
        return None

    def _stage_to_esme(self, system_id: str, sm: ShortMessage, now: float,
                       info: dict[str, Any]) -> Message:
        sm.sequence = 0
        msg = Message(self.queue.new_id(), TO_ESME, system_id, Cmd.DELIVER_SM,
                      encode_short_message_body(sm), now, now + self._max_validity, info)
        self.queue.stage_put(msg)
        self._enqueue(msg)
        return msg

    # -- carrier side: deliveries to receivers ------------------------------------------

    def esme_up(self, link: EsmeLink) -> None:
        self._carriers.add(link)
        if self._reading_paused and link.transport is not None:
            link.transport.pause_reading()
        if link.receives:
            self._esme_links.setdefault(link.system_id, []).append(link)
            self._schedule_pump()

    def esme_down(self, link: EsmeLink, unanswered: list[Message]) -> None:
        self._carriers.discard(link)
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
        self.accepting = False
        self._reading_paused = False

    def stop_sending(self) -> None:
        self.sending = False

    def cancel_retries(self) -> None:
        for handle in self._retry_handles:
            handle.cancel()
        self._retry_handles.clear()

    def in_flight(self) -> int:
        return sum(u.session.outstanding for u in self._upstreams)

