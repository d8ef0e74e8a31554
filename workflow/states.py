"""The state machines of letters and counterparts: their states and the allowed transitions.

Each machine is an Enum of states and one table of allowed moves; :func:`transition` applies a
move and raises :class:`StateError`, changing nothing, when the table does not allow it.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TypeVar

from .errors import StateError

__all__ = ["LetterStatus", "CounterpartStatus", "EnvelopeStatus", "LETTER_TRANSITIONS",
           "COUNTERPART_TRANSITIONS", "ENVELOPE_TRANSITIONS", "transition", "can_transition",
           "OPEN_COUNTERPART_STATUSES"]


class LetterStatus(StrEnum):
    DRAFT = "draft"
    GENERATED = "generated"
    OUT_FOR_SIGNATURE = "out_for_signature"
    PARTIALLY_EXECUTED = "partially_executed"
    FULLY_EXECUTED = "fully_executed"
    DECLINED = "declined"
    VOIDED = "voided"

    @property
    def label(self) -> str:
        return self.value.replace("_", " ").capitalize()


class CounterpartStatus(StrEnum):
    """Where one signer's counterpart stands.

    ``created``: waiting for earlier signers (signing order); ``ready``: the link is issued but
    was not handed to a mail server, so staff must pass it on; ``sent``: the mail server
    accepted the invitation.
    """

    CREATED = "created"
    READY = "ready"
    SENT = "sent"
    VIEWED = "viewed"
    SIGNED = "signed"
    DECLINED = "declined"
    EXPIRED = "expired"
    VOIDED = "voided"

    @property
    def label(self) -> str:
        return "Link ready" if self is CounterpartStatus.READY else self.value.capitalize()


class EnvelopeStatus(StrEnum):
    OUT = "out"
    COMPLETED = "completed"
    DECLINED = "declined"
    VOIDED = "voided"


L, C, E = LetterStatus, CounterpartStatus, EnvelopeStatus

LETTER_TRANSITIONS: dict[LetterStatus, frozenset[LetterStatus]] = {
    # A draft's documents are being generated; editing its terms keeps it a draft.
    L.DRAFT: frozenset({L.DRAFT, L.GENERATED}),
    L.GENERATED: frozenset({L.DRAFT, L.OUT_FOR_SIGNATURE}),
    L.OUT_FOR_SIGNATURE: frozenset({L.PARTIALLY_EXECUTED, L.FULLY_EXECUTED, L.DECLINED,
                                    L.VOIDED}),
    # Undoing the only paper upload takes a partially executed letter back to out for signature.
    L.PARTIALLY_EXECUTED: frozenset({L.OUT_FOR_SIGNATURE, L.PARTIALLY_EXECUTED,
                                     L.FULLY_EXECUTED, L.DECLINED, L.VOIDED}),
    L.FULLY_EXECUTED: frozenset(),
    L.DECLINED: frozenset({L.VOIDED}),
    # Once voided, the terms may be edited (a new draft version) and the letter sent again.
    L.VOIDED: frozenset({L.DRAFT, L.OUT_FOR_SIGNATURE}),
}

COUNTERPART_TRANSITIONS: dict[CounterpartStatus, frozenset[CounterpartStatus]] = {
    C.CREATED: frozenset({C.READY, C.SENT, C.SIGNED, C.VOIDED}),
    C.READY: frozenset({C.SENT, C.VIEWED, C.SIGNED, C.DECLINED, C.EXPIRED, C.VOIDED}),
    # A new link replaces the one emailed: it is ready again until its own email is accepted.
    C.SENT: frozenset({C.READY, C.VIEWED, C.SIGNED, C.DECLINED, C.EXPIRED, C.VOIDED}),
    C.VIEWED: frozenset({C.SIGNED, C.DECLINED, C.EXPIRED, C.VOIDED}),
    # Undoing a paper upload, before the letter is fully executed, reopens the counterpart.
    C.SIGNED: frozenset({C.CREATED, C.READY, C.SENT, C.VIEWED}),
    C.DECLINED: frozenset({C.VOIDED}),
    # A renewed link reopens an expired counterpart.
    C.EXPIRED: frozenset({C.READY, C.SENT, C.VOIDED}),
    C.VOIDED: frozenset(),
}

ENVELOPE_TRANSITIONS: dict[EnvelopeStatus, frozenset[EnvelopeStatus]] = {
    E.OUT: frozenset({E.COMPLETED, E.DECLINED, E.VOIDED}),
    E.COMPLETED: frozenset(),
    E.DECLINED: frozenset({E.VOIDED}),
    E.VOIDED: frozenset(),
}

OPEN_COUNTERPART_STATUSES = frozenset({C.CREATED.value, C.READY.value, C.SENT.value,
                                       C.VIEWED.value})
"""Counterparts still to be signed: their link works (when their turn has come)."""

_TABLES: dict[type, dict] = {LetterStatus: LETTER_TRANSITIONS,
                             CounterpartStatus: COUNTERPART_TRANSITIONS,
                             EnvelopeStatus: ENVELOPE_TRANSITIONS}
_NOUNS = {LetterStatus: "letter", CounterpartStatus: "counterpart", EnvelopeStatus: "envelope"}

S = TypeVar("S", LetterStatus, CounterpartStatus, EnvelopeStatus)


def can_transition(current: S, target: S) -> bool:
    """Say whether the machine allows moving from ``current`` to ``target``."""
    return target in _TABLES[type(current)][current]


def transition(current: S | str, target: S) -> S:
    """Return ``target`` if the move from ``current`` is allowed, else raise StateError."""
    machine = type(target)
    state = machine(current)
    if not can_transition(state, target):
        noun = _NOUNS[machine]
        now, then = state.value.replace("_", " "), target.value.replace("_", " ")
        if state is target:
            raise StateError(f"This {noun} is already {now}.")
        article = "An" if noun[0] in "aeiou" else "A"
        raise StateError(f"{article} {noun} that is {now} cannot become {then}.")
    return target
