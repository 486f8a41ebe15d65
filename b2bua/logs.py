"""Structured logging: one JSON object per line when not on a terminal, readable text on one.

Log calls pass context through ``extra`` (``call_id``, ``peer``, ...); those fields are
copied into the JSON object. Real numbers are masked by the caller with
``translate.numbers.mask``; ``setup_logging`` switches masking off only when asked to.
"""

from __future__ import annotations

import json
import logging
import sys
import time

_STANDARD = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys()
    | {"message", "asctime", "taskName"}
)


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object: ts, level, logger, msg, and every extra field."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = (
                    value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
                )
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """Human-readable form for a terminal, extras appended as key=value."""

    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(
            f"{k}={v}"
            for k, v in record.__dict__.items()
            if k not in _STANDARD and not k.startswith("_")
        )
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        line = f"{stamp} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if extras:
            line += "  " + extras
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup_logging(
    level: str = "info", *, show_numbers: bool = False, stream: object = None
) -> None:
    """Configure the root logger for the process."""
    import translate.numbers as numbers

    numbers.SHOW_REAL_NUMBERS = show_numbers
    out = stream if stream is not None else sys.stdout
    handler = logging.StreamHandler(out)  # type: ignore[arg-type]
    is_tty = hasattr(out, "isatty") and out.isatty()
    handler.setFormatter(TextFormatter() if is_tty else JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
