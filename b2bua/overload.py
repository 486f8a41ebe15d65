"""Overload control, sans-IO: from the engine's own queueing delay, what share of new
calls to refuse (with a stateless 503), and the RFC 7339 Via parameters that ask the
sending trunks to send fewer.

The signal is the age of the oldest unread datagram: the transport reads the socket in
turns and reports, for each turn, how long its first datagram waited in the kernel's
receive queue (from the kernel's receive timestamp). While ansim keeps up, that is well
under a millisecond; when more is offered than it can handle, the queue grows without
bound, every message is answered later, the peers retransmit what was not answered
within T1 (500 ms) and the engine spends its time on the same calls again and again
(goodput collapse). The detector looks at the *smallest* age seen in each interval
(100 ms): a burst that is read away within the interval leaves it small, a standing
queue does not (the idea of CoDel). A turn that empties the socket (reads fewer than
its batch) counts as no delay, however long its first datagram waited: the queue is
gone, so what kept that datagram waiting was a stall of the engine (a busy machine, a
pause of the process), not more traffic than it can carry, and refusing calls would not
shorten it; as in CoDel, a queue that is (nearly) empty is never a standing one. Above
``max_delay`` the share of new INVITEs that are admitted is cut by a factor
(multiplicative decrease); below half of it, it is raised by a step (additive
increase), so the admitted rate settles just under what the engine can carry. Calls
already admitted and in-dialog requests are never refused.

Refusals are spread evenly (a running credit, not a random draw). ``oc_params`` writes
the RFC 7339 ``oc``/``oc-validity``/``oc-seq``/``oc-algo`` parameters (the "loss"
algorithm: the percentage by which the client should reduce its requests) for the top
Via of responses to clients that announced support with ``oc`` in their Via.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class OverloadLimits:
    """How the detector reacts."""

    max_delay: float = 0.1  # seconds of standing queue above which new calls are cut
    interval: float = 0.1  # seconds between decisions
    decrease: float = 0.8  # admitted share multiplied by this per interval over max_delay
    increase: float = 0.02  # admitted share raised by this per interval under max_delay / 2
    min_admit: float = 0.02  # never refuse every call: the loop must still learn
    validity_ms: int = 2000  # oc-validity: how long an oc value holds


class OverloadDetector:
    """Decides, turn by turn, whether a new INVITE is admitted."""

    __slots__ = (
        "_changed",
        "_credit",
        "_turns",
        "admit_share",
        "admitted",
        "cut_delay",
        "delay",
        "limits",
        "next_update",
        "peak_delay",
        "rejected",
        "shedding",
        "window_min",
    )

    def __init__(self, limits: OverloadLimits | None = None) -> None:
        self.limits = limits or OverloadLimits()
        #: share of new INVITEs admitted now (1.0: all)
        self.admit_share = 1.0
        #: True while some new INVITEs are refused
        self.shedding = False
        #: the signal of the last interval (seconds): smallest queueing delay seen in it
        self.delay = 0.0
        #: largest queueing delay seen in the last interval (for metrics)
        self.peak_delay = 0.0
        #: the signal of the last interval that cut the admitted share (for the log)
        self.cut_delay = 0.0
        self.window_min = -1.0
        self._turns = 0
        self.next_update = 0.0
        self._credit = 0.0
        self._changed = 0.0
        self.admitted = 0
        self.rejected = 0

    def observe(self, delay: float, now: float, drained: bool = False) -> None:
        """One read turn: its first datagram waited ``delay`` seconds in the queue;
        ``drained``: the turn read the socket empty."""
        signal = 0.0 if drained else delay
        if self.window_min < 0.0 or signal < self.window_min:
            self.window_min = signal
        if delay > self.peak_delay:
            self.peak_delay = delay
        self._turns += 1
        if now >= self.next_update:
            self._decide(now)

    def tick(self, now: float) -> None:
        """Called about once a second, turns or not: an idle engine is not overloaded."""
        if now >= self.next_update:
            if self._turns and now >= self.next_update + self.limits.interval:
                self._decide(self.next_update)  # the last interval with turns, then quiet
            self._decide(now)

    def _decide(self, now: float) -> None:
        limits = self.limits
        signal = self.window_min if self._turns else 0.0
        self.delay = signal
        share = self.admit_share
        if signal > limits.max_delay:
            share = max(limits.min_admit, share * limits.decrease)
            self.cut_delay = signal
        elif signal < limits.max_delay / 2:
            # intervals that passed without a turn count as quiet ones
            steps = 1 + max(0, int((now - self.next_update) / limits.interval))
            share = min(1.0, share + limits.increase * steps)
        if share != self.admit_share:
            self._changed = now
        self.admit_share = share
        self.shedding = share < 1.0
        self.window_min = -1.0
        self.peak_delay = 0.0
        self._turns = 0
        self.next_update = now + limits.interval

    def admit(self) -> bool:
        """Whether the next new INVITE is admitted (only asked while ``shedding``)."""
        credit = self._credit + self.admit_share
        if credit >= 1.0:
            self._credit = credit - 1.0
            self.admitted += 1
            return True
        self._credit = credit
        self.rejected += 1
        return False

    def oc_active(self, now: float) -> bool:
        """Whether responses carry oc parameters: while shedding, and for a validity
        period after the last change (so that clients hear ``oc=0``)."""
        return self.shedding or (
            self._changed > 0.0 and now - self._changed < self.limits.validity_ms / 1000
        )

    def oc_params(self, epoch_offset: float) -> bytes:
        """RFC 7339 parameters for the top Via of a response to a client that supports
        overload control: ``oc`` is the percentage by which it should cut what it sends
        (0 once the overload is over); ``oc-seq`` is the wall-clock time the value was
        set (``epoch_offset`` turns the detector's clock into Unix time), so that it
        grows with every change."""
        loss = round((1.0 - self.admit_share) * 100)
        ms = int((self._changed + epoch_offset) * 1000)
        return b';oc=%d;oc-validity=%d;oc-seq=%d.%03d;oc-algo="loss"' % (
            loss,
            self.limits.validity_ms if loss else 0,
            ms // 1000,
            ms % 1000,
        )
