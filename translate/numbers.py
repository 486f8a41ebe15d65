"""Telephone number normalisation to E.164 and masking for logs.

Every number that enters ansim (SIP Request-URI and From user parts, ``tel:`` URIs,
SMPP addresses, operator maps, API calls) is normalised here once, at the edge, to
E.164 text: ``+`` followed by 7 to 15 digits, the first not 0. The translation store and
everything after it compare numbers as these exact strings.

National-only numbers
=====================
Some national service numbers have no valid E.164 form: China's number-protection
range 700 has 15-digit national numbers, 17 digits after ``+86``, past E.164's 15. A
range of ``NATIONAL_PLANS`` marked ``national_only`` holds such numbers. They are
stored in the same canonical form as every other number, ``+`` country code national
number (``+86700123456789012``), so maps, the store, lookups, pools, logs and records
treat them like any number; ``is_e164`` is False for them and ``national_only`` says so.
What leaves ansim never presents them as E.164: a trunk is sent the national number
(``700123456789012``) when it is of the number's own country and the trunk's
international prefix form (``0086700...``) otherwise (``national_form`` and
``b2bua.trunks.Trunk.write_number``); SMPP gets the national number with TON national
(``sms_smpp.translation``). They are read in every form other numbers are:
``700 1234 5678 9012`` under a Chinese plan, ``+86 700...``, ``0086 700...``,
``tel:700...;phone-context=+86``, ``sip:700...;phone-context=+86@host``.

``normalise`` never raises on bad input: it returns a ``NumberError`` value, because it
runs on the hot path of every call and garbage from a trunk is ordinary there.

Accepted forms, for a plan with country code 82, trunk prefix 0, international prefix 00:

=============================================  ==================
``+82 10-1234-5678``, ``+82 (0)10 1234 5678``  ``+821012345678``
``010-1234-5678``, ``(010) 1234.5678``         ``+821012345678``
``0082 10 1234 5678``                          ``+821012345678``
``1012345678`` (no trunk prefix)               ``+821012345678``
``821012345678`` (country code, no ``+``)      ``+821012345678``
``sip:010-1234-5678@trunk;user=phone``         ``+821012345678``
``tel:+82-10-1234-5678;ext=1``                 ``+821012345678``
``tel:1234-5678;phone-context=+8210``          ``+821012345678``
=============================================  ==================

A number written with the plan's own country code followed by its trunk prefix
(``+82 010...``, a frequent slip) has the trunk prefix dropped. Digits without any prefix
are taken as a national significant number, unless they are longer than the plan's
``national_max_digits`` and start with the country code, in which case the country code
is taken to be already there (some trunks send it without ``+``).

National numbering plans
========================
A number whose country has an entry in ``NATIONAL_PLANS`` must also have a length its
range allows: a Korean mobile (``010``) has 10 digits after ``+82`` (11 written
nationally with the ``0``), so ``010-1234-567`` is refused instead of being taken for
another subscriber's number. Each plan lists its ranges by the first digits of the
national significant number (what follows the country code); the longest listed prefix
decides, and a number in no listed range is held to the E.164 bounds only. The check
costs one dictionary look-up: ``_LENGTHS`` indexes every range by a fixed-length prefix
of the E.164 digits, built once from the table. A number longer than 15 digits takes one
more comparison before the same look-up, which accepts it only in a national-only range.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from urllib.parse import unquote

__all__ = [
    "CN",
    "KR",
    "NATIONAL_PLANS",
    "SHOW_REAL_NUMBERS",
    "NationalPlan",
    "NumberError",
    "NumberPlan",
    "Range",
    "is_e164",
    "is_number",
    "mask",
    "national_form",
    "national_only",
    "normalise",
]

#: Set by the process entry point (``--show-numbers`` when debugging) to log real numbers.
SHOW_REAL_NUMBERS = False

_DIGITS = frozenset("0123456789")
_SEPARATORS = str.maketrans("", "", "-. ()\t")
_MIN_DIGITS = 7
_MAX_DIGITS = 15


@dataclass(frozen=True, slots=True)
class NumberPlan:
    """How national and international forms are written on one trunk or in one country.

    ``national_max_digits`` is the longest national significant number (without trunk
    prefix); longer bare digit strings that begin with the country code are taken to
    include it.
    """

    country_code: str = "82"
    trunk_prefix: str = "0"
    international_prefix: str = "00"
    national_max_digits: int = 11
    #: country code and trunk prefix together ("820"), a slip to undo; "" without a prefix
    own_trunk: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("country_code", "trunk_prefix", "international_prefix"):
            value = getattr(self, name)
            if not set(value) <= _DIGITS:
                raise ValueError(f"{name} must be digits, got {value!r}")
        if not self.country_code or self.country_code[0] == "0":
            raise ValueError("country_code must be 1-3 digits not starting with 0")
        if not self.international_prefix:
            raise ValueError("international_prefix must not be empty")
        own = self.country_code + self.trunk_prefix if self.trunk_prefix else ""
        object.__setattr__(self, "own_trunk", own)


KR = NumberPlan("82", "0", "00")
# China: 0 before area codes, none before mobiles (13x...), 00 for international.
CN = NumberPlan("86", "0", "00")


@dataclass(frozen=True, slots=True)
class Range:
    """One range of a national numbering plan: national significant numbers that start
    with ``prefix`` have one of ``lengths`` digits (without country code or trunk prefix).
    ``national_only``: the range's numbers have no valid E.164 form (they may be longer
    than E.164 allows); they are reachable only inside their country."""

    prefix: str
    lengths: tuple[int, ...]
    what: str
    national_only: bool = False


@dataclass(frozen=True, slots=True)
class NationalPlan:
    """The ranges of one country's numbering plan, for the numbers under its country code."""

    country_code: str
    name: str
    ranges: tuple[Range, ...]

    def range_of(self, national: str) -> Range | None:
        """The range of the longest prefix ``national`` starts with, or None."""
        best: Range | None = None
        for r in self.ranges:
            if national.startswith(r.prefix) and (best is None or len(r.prefix) > len(best.prefix)):
                best = r
        return best


def _ranges(prefixes: str, lengths: tuple[int, ...], what: str) -> tuple[Range, ...]:
    return tuple(Range(p, lengths, what) for p in prefixes.split())


#: National numbering plans by country code (lengths after the country code).
NATIONAL_PLANS: dict[str, NationalPlan] = {
    plan.country_code: plan
    for plan in (
        NationalPlan(
            "82",
            "Korean",
            (
                Range("10", (10,), "mobile (010)"),
                *_ranges("11 17 19", (9, 10), "mobile (011, 017, 019)"),
                # 15xx, 16xx and 18xx-xxxx are nationwide numbers of 8 digits; 016/018
                # mobiles share their first digits, so 16 and 18 take both lengths.
                Range("15", (8,), "nationwide number (15xx)"),
                *_ranges("16 18", (8, 9, 10), "mobile or nationwide number (016, 018, 16xx, 18xx)"),
                Range("2", (8, 9), "Seoul landline (02)"),
                *_ranges(
                    "31 32 33 41 42 43 44 51 52 53 54 55 61 62 63 64",
                    (9, 10),
                    "landline (031-064)",
                ),
                *_ranges("502 503 504 505 506 507 508", (10, 11), "personal number (0502-0508)"),
                Range("60", (9, 10), "premium-rate number (060)"),
                Range("70", (10,), "internet telephony number (070)"),
                Range("80", (9, 10), "freephone number (080)"),
            ),
        ),
        NationalPlan(
            "86",
            "Chinese",
            (
                *_ranges("13 14 15 16 17 18 19", (11,), "mobile (13x-19x)"),
                Range("10", (10,), "Beijing landline (010)"),
                Range("2", (10,), "landline (020-029)"),
                Range("700", (15,), "number-protection number (700)", national_only=True),
            ),
        ),
    )
}


#: Set in a ``_LENGTHS`` value when the range is national-only (above every length bit).
_NATIONAL_ONLY_BIT = 1 << 40


def _length_index() -> tuple[int, dict[str, int], int]:
    """(key length, {first digits of E.164: bit mask of allowed digit counts, with
    _NATIONAL_ONLY_BIT for a national-only range}, most digits any range allows)."""
    keys = [plan.country_code + r.prefix for plan in NATIONAL_PLANS.values() for r in plan.ranges]
    width = max(len(k) for k in keys)
    if len(set(keys)) != len(keys):
        raise ValueError("a prefix is listed twice in NATIONAL_PLANS")
    index: dict[str, int] = {}
    longest = _MAX_DIGITS
    # Shorter prefixes first, so a longer one overwrites the keys it shares with them.
    for plan in NATIONAL_PLANS.values():
        for r in sorted(plan.ranges, key=lambda r: len(r.prefix)):
            head = plan.country_code + r.prefix
            mask = _NATIONAL_ONLY_BIT if r.national_only else 0
            for n in r.lengths:
                total = len(plan.country_code) + n
                if total > _MAX_DIGITS and not r.national_only:
                    raise ValueError(f"{plan.name} {r.what}: longer than E.164 allows")
                mask |= 1 << total
                longest = max(longest, total)
            pad = width - len(head)
            for tail in range(10**pad):
                index[head + (f"{tail:0{pad}d}" if pad else "")] = mask
    return width, index, longest


_KEY, _LENGTHS, _MAX_NATIONAL_DIGITS = _length_index()


@dataclass(frozen=True, slots=True)
class NumberError:
    """Why a string is not a usable telephone number (a value, not an exception)."""

    reason: str

    def __str__(self) -> str:
        return self.reason


def normalise(raw: str, plan: NumberPlan = KR) -> str | NumberError:
    """Return ``raw`` as E.164 text (``+8210...``), or a NumberError saying why not."""
    # Most numbers arrive as bare digits, with or without "+": the short way.
    if raw[:1] == "+":
        digits = raw[1:]
        if digits.isdigit() and digits.isascii():
            own = plan.own_trunk
            if own and digits.startswith(own):
                digits = plan.country_code + digits[len(own) :]
            return _e164(digits)
    elif raw.isdigit() and raw.isascii():
        return _e164(_prefixes(raw, plan))
    text = raw.strip()
    if not text:
        return NumberError("empty number")
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)  # full-width digits and dashes
    context = ""
    open_angle = text.find("<")  # name-addr: "Alice" <sip:...>
    if open_angle >= 0:
        end = text.find(">", open_angle)
        text = text[open_angle + 1 : end] if end > 0 else text[open_angle + 1 :]
    head = text[:5].lower()
    if head.startswith(("sip:", "sips:")):
        text = _sip_user(text[text.find(":") + 1 :])
        if not text:
            return NumberError("SIP URI has no user part")
        text, context = _split_params(text)
    elif head.startswith("tel:"):
        text, context = _split_params(text[4:])
    elif ";" in text:  # a SIP user part as received: 700...;phone-context=+86
        text, context = _split_params(text)
    if "%" in text:
        text = unquote(text)
    text = text.replace("(0)", "", 1) if text[:1] == "+" else text
    # Most numbers arrive without separators; translate() would raise and catch a
    # KeyError inside CPython for every character it keeps.
    plain = text[1:] if text[:1] == "+" else text
    digits = text if plain.isdigit() else text.translate(_SEPARATORS)
    if not digits:
        return NumberError("no digits")
    if context:
        if digits[0] == "+":
            pass  # a global number ignores its phone-context
        elif context[0] == "+" and context[1:].isdigit():
            digits = context + digits
        else:
            return NumberError("phone-context is not a global number prefix")
    return _check(_prefixes(digits, plan))


def _prefixes(digits: str, plan: NumberPlan) -> str:
    """The E.164 digits (no "+") of ``digits`` written after a "+", an international
    prefix, a trunk prefix or none, as ``plan`` reads them; not checked yet."""
    if digits[0] == "+" or digits.startswith(plan.international_prefix):
        digits = digits[1:] if digits[0] == "+" else digits[len(plan.international_prefix) :]
        own = plan.own_trunk
        if own and digits.startswith(own):
            digits = plan.country_code + digits[len(own) :]
    elif plan.trunk_prefix and digits.startswith(plan.trunk_prefix):
        digits = plan.country_code + digits[len(plan.trunk_prefix) :]
    elif not (len(digits) > plan.national_max_digits and digits.startswith(plan.country_code)):
        digits = plan.country_code + digits
    return digits


def _e164(digits: str) -> str | NumberError:
    """``+digits`` when ``digits`` (ASCII digits) is a usable number, else why not."""
    n = len(digits)
    if _MIN_DIGITS <= n <= _MAX_DIGITS and digits[0] != "0":
        allowed = _LENGTHS.get(digits[:_KEY])
        if allowed is None or (allowed >> n) & 1:
            return "+" + digits
        return _wrong_length(digits)
    if not digits:
        return NumberError("no digits")
    if digits[0] == "0":
        return NumberError("country code cannot start with 0")
    if n < _MIN_DIGITS:
        return NumberError(f"too short ({n} digits, at least {_MIN_DIGITS})")
    allowed = _LENGTHS.get(digits[:_KEY])
    if allowed is not None and allowed & _NATIONAL_ONLY_BIT:  # longer than E.164 may be
        return "+" + digits if (allowed >> n) & 1 else _wrong_length(digits)
    return NumberError(f"too long ({n} digits, at most {_MAX_DIGITS})")


def _check(digits: str) -> str | NumberError:
    if not digits.isascii() or not digits.isdigit():
        if not digits:
            return NumberError("no digits")
        bad = next((c for c in digits if c not in _DIGITS), "?")
        return NumberError(f"invalid character {bad!r}")
    return _e164(digits)


def _wrong_length(digits: str) -> NumberError:
    """The error for E.164 ``digits`` whose length their national range does not allow."""
    for cc_len in (1, 2, 3):
        plan = NATIONAL_PLANS.get(digits[:cc_len])
        found = None if plan is None else plan.range_of(digits[cc_len:])
        if plan is not None and found is not None:
            n = len(digits) - cc_len
            expected = " or ".join(str(length) for length in found.lengths)
            side = "short" if n < min(found.lengths) else "long"
            return NumberError(
                f"too {side} for a {plan.name} {found.what}: {n} digits after"
                f" +{plan.country_code}, expected {expected}"
            )
    return NumberError("wrong length for its national numbering plan")


def _sip_user(rest: str) -> str:
    """The user part of a SIP URI without scheme; empty when there is none."""
    at = rest.find("@")
    if at < 0:
        return ""
    user = rest[:at]
    colon = user.find(":")  # user:password@host
    return user[:colon] if colon >= 0 else user


def _split_params(text: str) -> tuple[str, str]:
    """Split ``number;param=..;phone-context=X`` into the number and the phone-context."""
    semi = text.find(";")
    if semi < 0:
        return text, ""
    number, params = text[:semi], text[semi + 1 :]
    context = ""
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "phone-context":
            context = value.strip().translate(_SEPARATORS)
    return number, context


def is_number(number: str) -> bool:
    """True when ``number`` is in the canonical form ``normalise`` produces: E.164, or a
    national-only number written the same way (``+86700...``)."""
    digits = number[1:]
    n = len(digits)
    if not (
        number[:1] == "+"
        and _MIN_DIGITS <= n <= _MAX_NATIONAL_DIGITS
        and digits.isascii()
        and digits.isdigit()
        and digits[0] != "0"
    ):
        return False
    allowed = _LENGTHS.get(digits[:_KEY])
    if allowed is None:
        return n <= _MAX_DIGITS
    return bool((allowed >> n) & 1)


def national_only(number: str) -> bool:
    """True when the canonical ``number`` is in a national-only range (no E.164 form)."""
    allowed = _LENGTHS.get(number[1 : 1 + _KEY])
    return allowed is not None and bool(allowed & _NATIONAL_ONLY_BIT)


def is_e164(number: str) -> bool:
    """True when ``number`` is a valid E.164 number in canonical form (national-only
    numbers are not: see ``is_number``)."""
    return is_number(number) and len(number) <= _MAX_DIGITS + 1 and not national_only(number)


def national_form(number: str) -> tuple[str, str] | None:
    """(country code, national number) of a canonical national-only ``number``
    (``+86700123456789012`` -> ``("86", "700123456789012")``); None for any other number."""
    if not national_only(number):
        return None
    for cc_len in (1, 2, 3):
        if number[1 : 1 + cc_len] in NATIONAL_PLANS:
            return number[1 : 1 + cc_len], number[1 + cc_len :]
    return None


def mask(number: str) -> str:
    """Hide the middle of a number for logs: ``+821012345678`` -> ``+8210****5678``.

    The length of the hidden part is not revealed. Returns ``number`` unchanged when
    ``SHOW_REAL_NUMBERS`` is set.
    """
    if SHOW_REAL_NUMBERS:
        return number
    keep_head = 5 if number[:1] == "+" else 4
    if len(number) >= keep_head + 6:
        return number[:keep_head] + "****" + number[-4:]
    return "****" + number[-2:] if len(number) > 4 else "****"
