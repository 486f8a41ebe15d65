"""The one exception type of the SIP core: a parse or validation failure with a status hint."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .message import SipMessage


class SipParseError(Exception):
    """A message that cannot be accepted.

    ``status`` is the response a request deserves (400 unless a more specific code
    applies); ``message`` is whatever was parsed before the failure, when enough was
    parsed to address a response to its sender.
    """

    __slots__ = ("message", "reason", "status")

    def __init__(self, reason: str, status: int = 400, message: SipMessage | None = None):
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.message = message
