"""Telephone number normalisation to E.164 and masking for logs.

Every number that enters ansim (SIP Request-URI and From user parts, ``tel:`` URIs,
SMPP addresses, operator maps, API calls) is normalised here once, at the edge, to
E.164 text: ``+`` followed by 7 to 15 digits, the first not 0. The translation store and
everything after it compare numbers as these exact strings.

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
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from urllib.parse import unquote

__all__ = [
    "CN",
    "KR",
    "SHOW_REAL_NUMBERS",
    "NumberError",
    "NumberPlan",
    "is_e164",
    "mask",
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

    def __post_init__(self) -> None:
        for name in ("country_code", "trunk_prefix", "international_prefix"):
            value = getattr(self, name)
            if not set(value) <= _DIGITS:
                raise ValueError(f"{name} must be digits, got {value!r}")
        if not self.country_code or self.country_code[0] == "0":
            raise ValueError("country_code must be 1-3 digits not starting with 0")
        if not self.international_prefix:
            raise ValueError("international_prefix must not be empty")


KR = NumberPlan("82", "0", "00")
# China: 0 before area codes, none before mobiles (13x...), 00 for international.
CN = NumberPlan("86", "0", "00")


@dataclass(frozen=True, slots=True)
class NumberError:
    """Why a string is not a usable telephone number (a value, not an exception)."""

    reason: str

    def __str__(self) -> str:
        return self.reason


def normalise(raw: str, plan: NumberPlan = KR) -> str | NumberError:
    """Return ``raw`` as E.164 text (``+8210...``), or a NumberError saying why not."""
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
    if digits[0] == "+" or digits.startswith(plan.international_prefix):
        digits = digits[1:] if digits[0] == "+" else digits[len(plan.international_prefix) :]
        own_trunk = plan.country_code + plan.trunk_prefix
        if plan.trunk_prefix and digits.startswith(own_trunk):
            digits = plan.country_code + digits[len(own_trunk) :]
    elif plan.trunk_prefix and digits.startswith(plan.trunk_prefix):
        digits = plan.country_code + digits[len(plan.trunk_prefix) :]
    elif not (len(digits) > plan.national_max_digits and digits.startswith(plan.country_code)):
        digits = plan.country_code + digits
    return _check(digits)


def _check(digits: str) -> str | NumberError:
    if not digits:
        return NumberError("no digits")
    if not digits.isascii() or not digits.isdigit():
        bad = next((c for c in digits if c not in _DIGITS), "?")
        return NumberError(f"invalid character {bad!r}")
    if digits[0] == "0":
        return NumberError("country code cannot start with 0")
    if len(digits) < _MIN_DIGITS:
        return NumberError(f"too short ({len(digits)} digits, at least {_MIN_DIGITS})")
    if len(digits) > _MAX_DIGITS:
        return NumberError(f"too long ({len(digits)} digits, at most {_MAX_DIGITS})")
    return "+" + digits


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


def is_e164(number: str) -> bool:
    """True when ``number`` is already in the normalised form ``normalise`` produces."""
    digits = number[1:]
    return (
        number[:1] == "+"
        and _MIN_DIGITS <= len(digits) <= _MAX_DIGITS
        and digits.isascii()
        and digits.isdigit()
        and digits[0] != "0"
    )


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
