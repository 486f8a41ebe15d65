"""Release causes: the Q.850 cause of Reason headers (RFC 3326, RFC 6432) and the status table."""

from __future__ import annotations

import pytest

from b2bua.sip.reason import Q850_BY_STATUS, q850_cause, q850_for_status


@pytest.mark.parametrize(
    ("values", "cause"),
    [
        ([b"Q.850;cause=16"], 16),
        ([b'Q.850;cause=17;text="User busy"'], 17),
        ([b"q.850 ; CAUSE = 31"], 31),  # case and whitespace are free
        ([b'SIP;cause=200;text="Call completed elsewhere", Q.850;cause=26'], 26),
        ([b'SIP;cause=487;text="Request Terminated"', b"Q.850;cause=127"], 127),  # two lines
        ([b'Q.850;text="cut; cause=1, really";cause=34'], 34),  # ; and , inside the text
        ([b"Q.850;cause=0"], 0),
        ([b"Q.850;cause=127;location=LN"], 127),
    ],
)
def test_q850_cause_found(values: list[bytes], cause: int) -> None:
    assert q850_cause(values) == cause


@pytest.mark.parametrize(
    "values",
    [
        [],
        [b""],
        [b"SIP;cause=486"],  # no Q.850 value
        [b"Q.850"],  # no cause
        [b"Q.850;cause="],
        [b"Q.850;cause=128"],  # outside Q.850's range
        [b"Q.850;cause=-1"],
        [b"Q.850;cause=16x"],
        [b"Q.850;cause=0016000"],
        [b"Q.8500;cause=16"],  # another protocol
        [b"X-Q.850;cause=16"],
    ],
)
def test_q850_cause_absent_or_invalid(values: list[bytes]) -> None:
    assert q850_cause(values) is None


def test_first_q850_value_wins() -> None:
    assert q850_cause([b"Q.850;cause=17, Q.850;cause=16"]) == 17


@pytest.mark.parametrize(
    ("status", "cause"),
    [
        (200, 16),
        (202, 16),
        (486, 17),
        (600, 17),
        (480, 18),
        (404, 1),
        (604, 1),
        (403, 21),
        (603, 21),
        (408, 102),
        (504, 102),
        (487, 16),  # the caller's CANCEL
        (502, 38),
        (503, 41),
        (484, 28),
        (302, 23),
        (488, 65),
        (499, 41),  # unknown 4xx: as 400
        (599, 41),  # unknown 5xx: as 500
        (699, 17),  # unknown 6xx: as 600
    ],
)
def test_status_table(status: int, cause: int) -> None:
    assert q850_for_status(status) == cause


def test_no_cause_below_200() -> None:
    assert q850_for_status(180) is None
    assert q850_for_status(0) is None


def test_every_cause_in_the_table_is_a_q850_value() -> None:
    assert all(0 < cause <= 127 for cause in Q850_BY_STATUS.values())
    assert all(200 <= status < 700 for status in Q850_BY_STATUS)
