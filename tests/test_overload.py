"""``b2bua.overload``: the detector's decisions from queueing delays, with the clock
passed in, and its RFC 7339 parameters."""

from __future__ import annotations

from b2bua.overload import OverloadDetector, OverloadLimits


def run(det: OverloadDetector, delays: list[float], start: float, turns: int = 10) -> float:
    """One interval per entry of ``delays``: ``turns`` read turns each seeing that delay."""
    t = start
    for d in delays:
        for i in range(turns):
            det.observe(d, t + i * det.limits.interval / turns)
        t += det.limits.interval
    return t


def test_an_engine_that_keeps_up_admits_everything() -> None:
    det = OverloadDetector()
    run(det, [0.0005] * 100, 0.0)
    assert not det.shedding and det.admit_share == 1.0


def test_a_burst_read_away_within_an_interval_is_not_overload() -> None:
    det = OverloadDetector()
    t = 0.0
    for _ in range(50):
        det.observe(0.3, t)  # a burst queued for 300 ms ...
        det.observe(0.0002, t + 0.05)  # ... then the queue is empty again
        t += 0.1
    assert not det.shedding


def test_a_standing_queue_cuts_new_calls_and_recovery_restores_them() -> None:
    det = OverloadDetector(OverloadLimits(max_delay=0.05))
    t = run(det, [0.2] * 5, 0.0)
    assert det.shedding
    assert 0.25 < det.admit_share < 0.5  # 0.8 ** 4 or 5
    admitted = sum(det.admit() for _ in range(1000))
    assert abs(admitted - det.admit_share * 1000) <= 1  # spread evenly, no random draw
    # the queue is gone: the share climbs back by steps
    t = run(det, [0.001] * 10, t)
    assert det.shedding and det.admit_share < 1.0
    t = run(det, [0.001] * 40, t)
    assert not det.shedding and det.admit_share == 1.0
    assert det.admit_share >= 0.02


def test_the_share_never_falls_to_zero() -> None:
    det = OverloadDetector()
    run(det, [5.0] * 200, 0.0)
    assert det.admit_share == det.limits.min_admit
    assert sum(det.admit() for _ in range(1000)) == 20


def test_an_idle_engine_recovers_without_traffic() -> None:
    det = OverloadDetector()
    t = run(det, [1.0] * 10, 0.0)
    assert det.shedding
    det.tick(t + 10.0)  # ten seconds without a datagram
    assert not det.shedding


def test_rfc7339_parameters() -> None:
    det = OverloadDetector()
    assert not det.oc_active(0.0)
    t = run(det, [0.5] * 3, 0.0)
    assert det.oc_active(t)
    params = det.oc_params(1_700_000_000.0)
    loss = round((1 - det.admit_share) * 100)
    assert params.startswith(b";oc=%d;oc-validity=2000;oc-seq=17000" % loss)
    assert params.endswith(b';oc-algo="loss"')
    seq1 = float(params.split(b"oc-seq=")[1].split(b";")[0])
    t = run(det, [0.001] * 60, t)
    assert not det.shedding
    # after the overload, oc=0 for the validity period, then nothing
    assert det.oc_active(det._changed + 1.0)
    end = det.oc_params(1_700_000_000.0)
    assert end.startswith(b";oc=0;oc-validity=0;")
    assert float(end.split(b"oc-seq=")[1].split(b";")[0]) > seq1
    assert not det.oc_active(det._changed + 3.0)
