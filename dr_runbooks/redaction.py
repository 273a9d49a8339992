"""Keeping secrets out of logs, messages, reports and child processes' argv.

Every secret the process learns (a password from a DSN or a block, a SAS token, a MongoDB URI's
password) is registered here with :func:`register_secret`; :func:`redact` then replaces it, and
anything shaped like a credential in a URI or key=value string, with ``***``. The logging filter
:class:`RedactingFilter` applies :func:`redact` to every record, and :func:`install_log_redaction`
puts it on the handlers Prefect's flow and task run logs pass through (Prefect itself redacts only
its own API key).
"""

from __future__ import annotations

import logging
import re
import threading

__all__ = ["RedactingFilter", "install_log_redaction", "redact", "register_secret"]

MASK = "***"

_lock = threading.Lock()
_secrets: set[str] = set()

# user:password@ in URIs, password=... / pwd=... in key=value strings, SAS signatures and
# account keys in connection strings and URLs.
_PATTERNS = [
    # The password runs to the *last* @ of the token: people put / and @ in passwords unescaped.
    re.compile(r"(?P<keep>[a-z][a-z0-9+.\-]*://[^:/?#@\s]*:)\S+(?=@[^@\s]*)", re.IGNORECASE),
    re.compile(r"(?P<keep>\b(?:password|passwd|pwd)\s*=\s*)('[^']*'|[^\s;&]+)", re.IGNORECASE),
    re.compile(r"(?P<keep>\b(?:sig|AccountKey|SharedAccessSignature)=)[^\s;&\"']+", re.IGNORECASE),
]


def register_secret(value: str | None) -> None:
    """Remember ``value`` so that :func:`redact` masks it wherever it appears."""
    if value and len(value) >= 3:
        with _lock:
            _secrets.add(value)


def redact(text: str) -> str:
    """Return ``text`` with every registered secret and credential-shaped value masked."""
    if not text:
        return text
    with _lock:
        known = sorted(_secrets, key=len, reverse=True)
    for secret in known:
        if secret in text:
            text = text.replace(secret, MASK)
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: m.group("keep") + MASK, text)
    return text


class RedactingFilter(logging.Filter):
    """A logging filter that masks secrets in a record's message and arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to the handler to report
            return True
        cleaned = redact(message)
        if cleaned != message or record.args:
            record.msg = cleaned
            record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            # The formatted traceback would repeat the exception's text verbatim.
            exc = record.exc_info[1]
            text = redact(str(exc))
            if text != str(exc):
                record.exc_text = f"{type(exc).__name__}: {text}"
                record.exc_info = None
        return True


_FILTER = RedactingFilter()
_LOGGERS = ("prefect", "prefect.flow_runs", "prefect.task_runs", "dr_runbooks", "")


def install_log_redaction() -> None:
    """Put the redacting filter on our loggers and every handler they reach (idempotent)."""
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
        current: logging.Logger | None = logger
        while current is not None:
            for handler in current.handlers:
                if _FILTER not in handler.filters:
                    handler.addFilter(_FILTER)
            current = current.parent if current.propagate else None
