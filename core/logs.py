"""Log lines an operator can search: the context of each line (request id, action, source,
Slack user) and the two formats, readable text (the default) or one JSON object a line.

The context lives in a contextvar: the Slack door and the intake set it per request, the
delivery per decision (:func:`bind`); :class:`ContextFilter` copies it onto each record. A
line never carries a secret: :class:`Redactor` replaces every configured secret value, and
anything shaped like a Slack token, before a line is written.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import sys
import uuid
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from typing import Any

FIELDS = ("request_id", "action_id", "source", "slack_user")
_CONTEXT: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("signoff_log_context", default=None)
_SLACK_TOKEN = re.compile(r"\bx(?:ox[abposr]|app)-[A-Za-z0-9-]+")
REDACTED = "[redacted]"


def new_request_id() -> str:
    return uuid.uuid4().hex[:16]


def current() -> dict[str, Any]:
    return dict(_CONTEXT.get() or {})


@contextlib.contextmanager
def bind(**fields: Any) -> Iterator[None]:
    """Add ``fields`` (those of ``FIELDS`` that are not None) to the context of every line
    logged inside the block, and of the tasks it starts."""
    merged = current()
    merged.update({k: v for k, v in fields.items() if v is not None})
    token = _CONTEXT.set(merged)
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def carried() -> contextvars.Context:
    """A fresh context holding only the log context of this one (for work a request starts
    that must not inherit the rest of it)."""
    context = contextvars.Context()
    context.run(_CONTEXT.set, _CONTEXT.get())
    return context


class ContextFilter(logging.Filter):
    """Copies the context onto each record (a field the call passed in ``extra`` wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in (_CONTEXT.get() or {}).items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class Redactor:
    """Replaces the secret values it was given, and Slack tokens, in a formatted line."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so a secret containing another is replaced whole; short ones are not secrets.
        self._secrets = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return _SLACK_TOKEN.sub(REDACTED, text)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC, ISO 8601), level, logger, message, the context
    fields that apply, and the exception's traceback, if any."""

    def __init__(self, redact: Redactor | None = None) -> None:
        super().__init__()
        self._redact = redact or Redactor()

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": self._redact(record.getMessage()),
        }
        for key in FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                line[key] = value if isinstance(value, int) else self._redact(str(value))
        if record.exc_info:
            line["exception"] = self._redact(self.formatException(record.exc_info))
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """The readable default: ``time LEVEL logger: message [key=value ...]``."""

    def __init__(self, redact: Redactor | None = None) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._redact = redact or Redactor()

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        context = " ".join(f"{k}={getattr(record, k)}" for k in FIELDS if getattr(record, k, None) is not None)
        first, nl, rest = text.partition("\n")
        return self._redact(f"{first} [{context}]{nl}{rest}" if context else text)


def handler(*, fmt: str = "text", secrets: Iterable[str] = (), stream: Any = None) -> logging.Handler:
    """A handler writing lines in ``fmt`` (text or json), with the context, secrets redacted."""
    redact = Redactor(secrets)
    out = logging.StreamHandler(stream or sys.stderr)
    out.setFormatter(JsonFormatter(redact) if fmt == "json" else TextFormatter(redact))
    out.addFilter(ContextFilter())
    return out


def configure(
    *, fmt: str = "text", level: str = "INFO", secrets: Iterable[str] = (), stream: Any = None
) -> logging.Handler | None:
    """Route the root logger to one handler in ``fmt`` at ``level``; returns the handler.

    As ``logging.basicConfig``: a root logger with handlers of someone else's (an embedding
    program, pytest) is left alone, and None returned; a handler of ours is replaced."""
    root = logging.getLogger()
    if any(not getattr(h, _OURS, False) for h in root.handlers):
        return None
    new = handler(fmt=fmt, secrets=secrets, stream=stream)
    setattr(new, _OURS, True)
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(new)
    root.setLevel(level)
    return new


_OURS = "_signoff_handler"
