"""Every allowed move of each state machine works; every other move raises and changes nothing."""

from __future__ import annotations

import itertools

import pytest

from workflow.errors import StateError
from workflow.states import (
    COUNTERPART_TRANSITIONS,
    ENVELOPE_TRANSITIONS,
    LETTER_TRANSITIONS,
    CounterpartStatus,
    EnvelopeStatus,
    LetterStatus,
    can_transition,
    transition,
)

MACHINES = [(LetterStatus, LETTER_TRANSITIONS), (CounterpartStatus, COUNTERPART_TRANSITIONS),
            (EnvelopeStatus, ENVELOPE_TRANSITIONS)]
PAIRS = [(table, a, b) for machine, table in MACHINES
         for a, b in itertools.product(machine, repeat=2)]


def test_every_state_has_a_row():
    for machine, table in MACHINES:
        assert set(table) == set(machine)


@pytest.mark.parametrize("table, current, target", PAIRS,
                         ids=[f"{a.value}->{b.value}" for _, a, b in PAIRS])
def test_transition(table, current, target):
    if target in table[current]:
        assert transition(current.value, target) is target
        assert can_transition(current, target)
    else:
        refusal = "is already" if current is target else "cannot become"
        with pytest.raises(StateError, match=refusal):
            transition(current, target)
        assert not can_transition(current, target)


def test_refusals_read_as_english():
    with pytest.raises(StateError, match="^An envelope that is voided cannot become out"):
        transition(EnvelopeStatus.VOIDED, EnvelopeStatus.OUT)
    with pytest.raises(StateError, match="^This envelope is already voided\\.$"):
        transition(EnvelopeStatus.VOIDED, EnvelopeStatus.VOIDED)


def test_the_letter_path_to_execution():
    path = [LetterStatus.DRAFT, LetterStatus.GENERATED, LetterStatus.OUT_FOR_SIGNATURE,
            LetterStatus.PARTIALLY_EXECUTED, LetterStatus.FULLY_EXECUTED]
    state = path[0]
    for target in path[1:]:
        state = transition(state, target)
    assert state is LetterStatus.FULLY_EXECUTED
    assert LETTER_TRANSITIONS[LetterStatus.FULLY_EXECUTED] == frozenset()


def test_voided_counterparts_are_final_and_signed_ones_only_reopen():
    # A signed counterpart moves only when staff undo a paper upload: back to an open state.
    assert COUNTERPART_TRANSITIONS[CounterpartStatus.SIGNED] == frozenset(
        {CounterpartStatus.CREATED, CounterpartStatus.READY, CounterpartStatus.SENT,
         CounterpartStatus.VIEWED})
    assert COUNTERPART_TRANSITIONS[CounterpartStatus.VOIDED] == frozenset()
    with pytest.raises(StateError, match="A counterpart that is signed cannot become voided"):
        transition(CounterpartStatus.SIGNED, CounterpartStatus.VOIDED)
