"""``b2bua.conn_limits``: inbound connections capped in total and per source."""

from __future__ import annotations

from b2bua.conn_limits import ConnectionLimits


def test_per_source_and_total_caps() -> None:
    limits = ConnectionLimits(10, 3, 6, is_trusted=lambda host: host == "203.0.113.1")
    assert [limits.open("192.0.2.1") for _ in range(4)] == [None, None, None, "per_source"]
    assert [limits.open("203.0.113.1") for _ in range(7)] == [None] * 6 + ["per_source"]
    assert limits.open("192.0.2.2") is None
    assert limits.total == 10
    assert limits.open("192.0.2.3") == "total"
    limits.release("192.0.2.1")
    assert limits.open("192.0.2.3") is None
    assert limits.open("192.0.2.1") == "total"
    for _ in range(3):
        limits.release("203.0.113.1")
    assert limits.open("192.0.2.1") is None
    assert limits.by_source == {"192.0.2.1": 3, "203.0.113.1": 3, "192.0.2.2": 1, "192.0.2.3": 1}
