"""Logs never hold a live signing link.

The token in ``/sign/<token>`` is the signer's only credential, so a log line that named it
would let anyone who reads the log sign. :class:`SigningTokenFilter` rewrites every signing
path in a record (its message and its traceback) to ``/sign/<hidden:1a2b3c4d>``: the first
hex digits of the token's SHA-256, which is what the database stores, so a logged request can
still be matched to its counterpart. :func:`init_app` puts the filter on the app's logger,
on Werkzeug's and waitress's (their access and error logs), and on the handlers they write
through.
"""

from __future__ import annotations

import hashlib
import logging
import re

from flask import Flask
from flask.logging import default_handler

__all__ = ["SigningTokenFilter", "redact_signing_links", "init_app", "REDACTED_LOGGERS"]

# /sign/<token> and /api/sign/<token>, in a path or a full address; and the one-time
# /account/set-password/<token> of an invited or reset account.
_SIGNING_PATH = re.compile(r"(/sign/|/set-password/)([A-Za-z0-9_\-.~%]{8,})")
REDACTED_LOGGERS = ("werkzeug", "waitress", "waitress.queue")


def _hidden(match: re.Match[str]) -> str:
    digest = hashlib.sha256(match.group(2).encode("utf-8")).hexdigest()
    return f"{match.group(1)}<hidden:{digest[:8]}>"


def redact_signing_links(text: str) -> str:
    """Replace the token of every signing path in ``text`` with a short hash of it."""
    return _SIGNING_PATH.sub(_hidden, text) if "/sign/" in text or "/set-password/" in text \
        else text


class SigningTokenFilter(logging.Filter):
    """Redact signing tokens from a record's message and traceback; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # arguments that do not fit; leave it to the handler
            return True
        redacted = redact_signing_links(message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_signing_links(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_signing_links(record.stack_info)
        return True


def _add_once(target: logging.Logger | logging.Handler) -> None:
    if not any(isinstance(f, SigningTokenFilter) for f in target.filters):
        target.addFilter(SigningTokenFilter())


def init_app(app: Flask) -> None:
    """Redact signing tokens in what the app, Werkzeug and waitress log."""
    for logger in (app.logger, *(logging.getLogger(name) for name in REDACTED_LOGGERS)):
        _add_once(logger)
    # Records of the app's own modules reach these handlers without passing the filters above.
    for handler in (default_handler, *logging.getLogger().handlers):
        _add_once(handler)
