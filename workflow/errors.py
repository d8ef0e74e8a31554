"""The errors a user of Counterpart can cause or meet, under one base class.

Views and the command line catch :class:`CounterpartError` and show its message; every
message is a sentence that names the field or the file concerned.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "CounterpartError",
    "TermsError",
    "TemplateError",
    "TemplateProblems",
    "ConversionError",
    "DocumentError",
    "NotFoundError",
    "StateError",
    "AuditError",
    "LinkError",
    "StorageFullError",
    "ScanCheckError",
    "SigningOrderError",
    "IdentityError",
    "NotReadyError",
]


class CounterpartError(Exception):
    """Base of every error Counterpart raises on purpose.

    ``code``, where set, names the kind of refusal for programs (the API answers it).
    """

    code: str | None = None


class TermsError(CounterpartError):
    """The terms of a letter are invalid; ``errors`` maps each bad field to its message."""

    def __init__(self, errors: Mapping[str, str]):
        self.errors = dict(errors)
        super().__init__("; ".join(f"{key}: {msg}" for key, msg in self.errors.items()))


class TemplateError(CounterpartError):
    """A .docx template or its schema cannot be used."""


class TemplateProblems(TemplateError):
    """A template or its schema is refused; ``problems`` lists every reason, each a sentence
    naming the variable, field, party or part of the document it concerns."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__(" ".join(self.problems))


class ConversionError(CounterpartError):
    """LibreOffice could not turn a document into PDF."""


class DocumentError(CounterpartError):
    """An uploaded or stored document is unreadable, unsafe or of the wrong shape."""


class NotFoundError(CounterpartError):
    """A letter, template, document or link does not exist."""


class StateError(CounterpartError):
    """An action is not allowed in the current state of a letter, envelope or counterpart."""


class NotReadyError(CounterpartError):
    """A document that a background job makes (a letter PDF, an executed PDF) is not made yet;
    waiting for it ran out of time. Try again in a moment."""

    code = "not_ready"


class AuditError(CounterpartError):
    """The audit record does not verify."""


class StorageFullError(CounterpartError):
    """The disk or database is full; nothing was written."""


class LinkError(CounterpartError):
    """A signing link cannot be used: expired, voided, already used, or not yet its turn.

    ``reason`` is one of ``expired``, ``voided``, ``signed``, ``declined``, ``waiting``.
    """

    def __init__(self, message: str, reason: str):
        self.reason = reason
        super().__init__(message)


class ScanCheckError(DocumentError):
    """A scan of a counterpart signed on paper did not pass a check; ``code`` says which.

    ``unsigned_copy``: the scan is a document the system produced, or its unsigned pages;
    ``ink_not_found``: nothing is written on the signer's signature line (staff may accept it
    anyway).
    """

    def __init__(self, message: str, code: str):
        self.code = code
        super().__init__(message)


class SigningOrderError(StateError):
    """A counterpart would be signed before the signers who come first in the signing order."""

    code = "signing_order"


class IdentityError(CounterpartError):
    """A signing link whose signer must first confirm their email address with a one-time
    code; ``code`` is ``identity`` (no code entered in this browser) or ``too_soon`` (a new
    code was asked for too soon)."""

    def __init__(self, message: str, code: str):
        self.code = code
        super().__init__(message)
