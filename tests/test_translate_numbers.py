"""Tests for translate.numbers: KR and CN normalisation tables, errors, masking."""

from __future__ import annotations

import pytest

import translate.numbers as numbers
from translate.numbers import (
    CN,
    KR,
    NATIONAL_PLANS,
    NumberError,
    NumberPlan,
    is_e164,
    is_number,
    mask,
    national_form,
    national_only,
    normalise,
)

KR_TABLE = [
    ("010-1234-5678", "+821012345678"),
    ("01012345678", "+821012345678"),
    ("010 1234 5678", "+821012345678"),
    ("010.1234.5678", "+821012345678"),
    ("(010) 1234-5678", "+821012345678"),
    ("+82 10-1234-5678", "+821012345678"),
    ("+82 (0)10 1234 5678", "+821012345678"),
    ("+82 010-1234-5678", "+821012345678"),
    ("+821012345678", "+821012345678"),
    ("0082 10 1234 5678", "+821012345678"),
    ("00821012345678", "+821012345678"),
    ("821012345678", "+821012345678"),
    ("1012345678", "+821012345678"),
    ("02-555-0101", "+8225550101"),
    ("031-123-4567", "+82311234567"),
    ("0507-000-1001", "+825070001001"),
    ("050-7000-1001", "+825070001001"),
    ("1588-1234", "+8215881234"),
    ("  010-1234-5678\t", "+821012345678"),
    (
        "\uff10\uff11\uff10\uff0d\uff11\uff12\uff13\uff14\uff0d\uff15\uff16\uff17\uff18",
        "+821012345678",
    ),  # full-width digits and dashes
    ("sip:01012345678@carrier.example", "+821012345678"),
    ("sip:+821012345678@carrier.example;user=phone", "+821012345678"),
    ("sips:010-1234-5678@10.0.0.1:5061;transport=tls", "+821012345678"),
    ("SIP:01012345678:secret@host", "+821012345678"),
    ("sip:%2B821012345678@host", "+821012345678"),
    ('"Kim" <sip:01012345678@host>;tag=abc', "+821012345678"),
    ("<tel:010-1234-5678>", "+821012345678"),
    ("tel:+82-10-1234-5678", "+821012345678"),
    ("tel:+82-10-1234-5678;ext=12", "+821012345678"),
    ("tel:1234-5678;phone-context=+8210", "+821012345678"),
    ("tel:010-1234-5678;phone-context=+82", "+821012345678"),
    ("sip:1234-5678;phone-context=+82-10@host;user=phone", "+821012345678"),
    ("+1 212 555 0100", "+12125550100"),
    ("001 212 555 0100", "+12125550100"),
    ("+86 138 0000 0001", "+8613800000001"),
]

CN_TABLE = [
    ("13800000001", "+8613800000001"),
    ("138-0000-0001", "+8613800000001"),
    ("138 0000 0001", "+8613800000001"),
    ("+86 138 0000 0001", "+8613800000001"),
    ("+86-138-0000-0001", "+8613800000001"),
    ("008613800000001", "+8613800000001"),
    ("8613800000001", "+8613800000001"),
    ("010-12345678", "+861012345678"),
    ("(010) 1234 5678", "+861012345678"),
    ("0755-8888-9999", "+8675588889999"),
    ("+86 755 8888 9999", "+8675588889999"),
    ("+86 (0)755 8888 9999", "+8675588889999"),
    ("400-820-8820", "+864008208820"),
    ("tel:+86-10-12345678", "+861012345678"),
    ("sip:13800000001@ims.example;user=phone", "+8613800000001"),
    ("+82 10 1234 5678", "+821012345678"),
    ("0082 10 1234 5678", "+821012345678"),
]


@pytest.mark.parametrize(("raw", "expected"), KR_TABLE)
def test_korea(raw: str, expected: str) -> None:
    assert normalise(raw, KR) == expected


@pytest.mark.parametrize(("raw", "expected"), CN_TABLE)
def test_china(raw: str, expected: str) -> None:
    assert normalise(raw, CN) == expected


def test_default_plan_is_korea() -> None:
    assert normalise("010-1234-5678") == "+821012345678"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "empty number"),
        ("   ", "empty number"),
        ("---", "no digits"),
        ("+", "no digits"),
        ("010-1234-567a", "invalid character 'a'"),
        ("010*1234", "invalid character '*'"),
        ("+82+1012345678", "invalid character '+'"),
        ("sip:alice@example.com", "invalid character 'a'"),
        ("sip:example.com", "SIP URI has no user part"),
        ("tel:1234;phone-context=example.com", "phone-context is not a global number prefix"),
        ("+0123456789", "country code cannot start with 0"),
        ("1234", "too short (6 digits, at least 7)"),
        ("+123456", "too short (6 digits, at least 7)"),
        ("+1234567890123456", "too long (16 digits, at most 15)"),
        (
            "\u0660\u0661\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668",
            "invalid character '\u0660'",
        ),  # Arabic-Indic digits
    ],
)
def test_garbage_gives_error_values(raw: str, reason: str) -> None:
    result = normalise(raw, KR)
    assert isinstance(result, NumberError)
    assert result.reason == reason
    assert str(result) == reason


def test_plan_without_trunk_prefix_keeps_leading_zero_digits() -> None:
    italy = NumberPlan("39", "", "00")
    assert normalise("06 1234 5678", italy) == "+390612345678"
    assert normalise("+39 06 1234 5678", italy) == "+390612345678"


def test_plan_rejects_bad_fields() -> None:
    with pytest.raises(ValueError):
        NumberPlan(country_code="0")
    with pytest.raises(ValueError):
        NumberPlan(trunk_prefix="x")
    with pytest.raises(ValueError):
        NumberPlan(international_prefix="")


def test_is_e164() -> None:
    assert is_e164("+821012345678")
    assert not is_e164("821012345678")
    assert not is_e164("+82-10")
    assert not is_e164("+0821012345")
    assert not is_e164(
        "+\uff18\uff12\uff11\uff10\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18"
    )  # full-width


def test_mask(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(numbers, "SHOW_REAL_NUMBERS", False)
    assert mask("+821012345678") == "+8210****5678"
    assert mask("+8613800000001") == "+8613****0001"
    assert mask("01012345678") == "0101****5678"
    assert mask("+82114") == "****14"
    assert mask("123") == "****"
    monkeypatch.setattr(numbers, "SHOW_REAL_NUMBERS", True)
    assert mask("+821012345678") == "+821012345678"


# Every range of the Korean and Chinese plans: (national significant number prefix,
# allowed lengths after the country code).
PLAN_RANGES = [
    (plan.country_code, r.prefix, r.lengths)
    for plan in NATIONAL_PLANS.values()
    for r in plan.ranges
]


def _number(cc: str, prefix: str, length: int) -> str:
    """A number of ``length`` digits after ``cc`` starting with ``prefix`` (digits 3-9 after
    it, so that no longer range of the same plan is hit by accident)."""
    fill = "".join(str(3 + i % 7) for i in range(length - len(prefix)))
    return cc + prefix + fill


@pytest.mark.parametrize(("cc", "prefix", "lengths"), PLAN_RANGES)
def test_every_range_takes_its_lengths_and_refuses_others(
    cc: str, prefix: str, lengths: tuple[int, ...]
) -> None:
    plan = NumberPlan(cc, "0", "00")
    for length in range(max(5, min(lengths) - 2), max(lengths) + 3):
        digits = _number(cc, prefix, length)
        national = "0" + digits[len(cc) :]
        dashed = f"{national[:3]}-{national[3:7]}-{national[7:]}"
        forms = ["+" + digits, national, dashed, "00" + digits, f"sip:{national}@h"]
        forms.append(f"tel:+{cc}-{digits[len(cc) :]}")
        for raw in forms:
            result = normalise(raw, plan)
            if length in lengths:
                assert result == "+" + digits, (raw, result)
                assert is_number("+" + digits)
                assert is_e164("+" + digits) is not national_only("+" + digits)
            else:
                assert isinstance(result, NumberError), (raw, result)
                assert not is_e164("+" + digits), digits
                assert not is_number("+" + digits), digits
                if 7 <= len(digits) <= 15 or national_only("+" + digits):
                    side = "short" if length < min(lengths) else "long"
                    assert result.reason.startswith(f"too {side} for a "), result
                    assert f"{length} digits after +{cc}" in result.reason


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("010-1234-567", "too short for a Korean mobile (010): 9 digits after +82, expected 10"),
        ("010-1234-56789", "too long for a Korean mobile (010): 11 digits after +82, expected 10"),
        (
            "0507-000-100",
            "too short for a Korean personal number (0502-0508): 9 digits after"
            " +82, expected 10 or 11",
        ),
        (
            "02-555-010",
            "too short for a Korean Seoul landline (02): 7 digits after +82, expected 8 or 9",
        ),
        (
            "+86 138 0000 000",
            "too short for a Chinese mobile (13x-19x): 10 digits after +86, expected 11",
        ),
    ],
)
def test_a_number_cut_short_is_refused_with_its_range(raw: str, reason: str) -> None:
    result = normalise(raw, KR)
    assert result == NumberError(reason)


def test_numbers_outside_listed_ranges_keep_the_e164_bounds() -> None:
    # 0501 and 0509 are not personal-number ranges; foreign numbers have no plan here.
    assert normalise("0501-234-5678") == "+825012345678"
    assert normalise("+1 212 555 0100") == "+12125550100"
    assert normalise("+44 20 7946 0000") == "+442079460000"


# China's number-protection range 700: 15-digit national numbers, 17 digits after +86,
# longer than E.164 allows. Every written form a map, an API call, a SIP trunk (Request-
# URI user parts, tel: URIs, phone-context) or SMPP sends.
CN_700 = "+86700123456789012"
CN_700_FORMS = [
    "700 1234 5678 9012",
    "700-1234-5678-9012",
    "700.1234.5678.9012",
    "(700) 1234 5678 9012",
    "700123456789012",
    "0700 1234 5678 9012",
    "+86 700 1234 5678 9012",
    "+86-700-1234-5678-9012",
    "+86 (0)700 1234 5678 9012",
    "+86700123456789012",
    "0086 700 1234 5678 9012",
    "0086700123456789012",
    "86700123456789012",
    "tel:+86-700-1234-5678-9012",
    "tel:700-1234-5678-9012;phone-context=+86",
    "<tel:+86700123456789012>",
    "sip:700123456789012@ims.example;user=phone",
    "sip:+86700123456789012@ims.example;user=phone",
    "sip:%2B86700123456789012@ims.example",
    "sip:700123456789012;phone-context=+86@ims.example;user=phone",
    '"Shop" <sip:0086700123456789012@ims.example>;tag=1',
    "700123456789012;phone-context=+86",  # a SIP user part as the parser gives it
    "+86700123456789012;phone-context=+86",
    "\uff17\uff10\uff10\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18\uff19\uff10\uff11\uff12",
]


@pytest.mark.parametrize("raw", CN_700_FORMS)
def test_china_700_in_every_form(raw: str) -> None:
    assert normalise(raw, CN) == CN_700


@pytest.mark.parametrize(
    "raw",
    [
        "+86700123456789012",
        "0086700123456789012",
        "tel:+86-700-1234-5678-9012",
        "sip:700123456789012;phone-context=+86@h",
    ],
)
def test_china_700_in_international_forms_under_another_plan(raw: str) -> None:
    assert normalise(raw, KR) == CN_700


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (
            "700 1234 5678 901",
            "too short for a Chinese number-protection number (700): 14 digits after +86,"
            " expected 15",
        ),
        (
            "700 1234 5678 90123",
            "too long for a Chinese number-protection number (700): 16 digits after +86,"
            " expected 15",
        ),
        (
            "+86 700 1234 5678",
            "too short for a Chinese number-protection number (700): 11 digits after +86,"
            " expected 15",
        ),
        (
            "+86 700 1234 5678 9012 3456 7",
            "too long for a Chinese number-protection number"
            " (700): 20 digits after +86, expected 15",
        ),
        ("+86 755 1234 5678 9012", "too long (17 digits, at most 15)"),
        ("+82 700 1234 5678 9012", "too long (17 digits, at most 15)"),
    ],
)
def test_china_700_of_a_wrong_length_is_refused(raw: str, reason: str) -> None:
    assert normalise(raw, CN) == NumberError(reason)


def test_national_only_numbers_are_numbers_but_not_e164() -> None:
    assert is_number(CN_700)
    assert national_only(CN_700)
    assert not is_e164(CN_700)
    assert national_form(CN_700) == ("86", "700123456789012")
    for number in ("+8613800000001", "+821012345678", "+8250770004001", "+12125550100"):
        assert is_number(number) and is_e164(number)
        assert not national_only(number)
        assert national_form(number) is None
    for bad in (
        "+8670012345678901",
        "+867001234567890123",
        "86700123456789012",
        "+1234567890123456",
    ):
        assert not is_number(bad)
        assert not is_e164(bad)


def test_mask_of_a_national_only_number(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(numbers, "SHOW_REAL_NUMBERS", False)
    assert mask(CN_700) == "+8670****9012"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("0502-123-4567", "+825021234567"),
        ("0505-1234-5678", "+8250512345678"),
        ("0508 1234 5678", "+8250812345678"),
        ("050-7123-4567", "+825071234567"),
        ("+82 507 1234 5678", "+8250712345678"),
        ("tel:0507-1234-5678;phone-context=+82", "+8250712345678"),
        ("sip:050712345678@carrier;user=phone", "+8250712345678"),
    ],
)
def test_korean_050_numbers_keep_working(raw: str, expected: str) -> None:
    assert normalise(raw, KR) == expected
    assert is_e164(expected) and not national_only(expected)
