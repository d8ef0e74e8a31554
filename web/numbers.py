"""Whole numbers from the outside world, read strictly: ASCII digits only, and bounded.

Python's ``int()`` takes ``" 12"``, ``"1_000"``, Arabic-Indic digits and, up to 4,300 digits,
numbers far beyond any database column; ``str.isdigit()`` even says yes to ``"²"``, which
``int()`` then refuses. So ids in paths go through :class:`BoundedIntegerConverter`, which the
app registers as its ``int`` converter (every ``<int:...>`` route uses it), query strings
through :func:`query_number`, and JSON bodies through :func:`loads_json`: a number out of
bounds is a 404 for a path (there is no such thing), a 400 naming the parameter otherwise.
"""

from __future__ import annotations

import builtins
import json
import re
from typing import Any, overload

from flask import abort, request
from werkzeug.routing import IntegerConverter, Map, ValidationError

__all__ = ["BoundedIntegerConverter", "parse_whole_number", "query_number", "loads_json",
           "MAX_ID", "MAX_JSON_DIGITS", "NumberError"]

# The largest value of an INTEGER column on PostgreSQL (and so of every id and number here).
MAX_ID = 2**31 - 1
_MAX_ID_DIGITS = len(str(MAX_ID))
# Digits a JSON integer may have: far more than any term needs, far fewer than a 4,300-digit
# number Python refuses to parse.
MAX_JSON_DIGITS = 30
_DIGITS = re.compile(r"[0-9]+")


class NumberError(ValueError):
    """A number in a request is not a plain whole number within its bounds."""


class BoundedIntegerConverter(IntegerConverter):
    """``<int:...>`` for ids and counts: 1 to 10 ASCII digits, at most :data:`MAX_ID`."""

    regex = rf"[0-9]{{1,{_MAX_ID_DIGITS}}}"

    def __init__(self, map: Map, fixed_digits: int = 0, min: int | None = None,  # noqa: A002
                 max: int | None = None, signed: bool = False) -> None:  # noqa: A002
        if signed:
            raise ValueError("ids in paths are never negative; use a signed converter of its "
                             "own for that")
        bound = MAX_ID if max is None else builtins.min(max, MAX_ID)
        super().__init__(map, fixed_digits, min, bound, signed)

    def to_python(self, value: str) -> int:
        if not _DIGITS.fullmatch(value) or len(value) > _MAX_ID_DIGITS:
            raise ValidationError()
        return super().to_python(value)  # type: ignore[no-any-return]


def parse_whole_number(raw: str, name: str, *, minimum: int = 0,
                       maximum: int = MAX_ID) -> int:
    """Read ``raw`` as ASCII digits between ``minimum`` and ``maximum``; NumberError names
    ``name`` otherwise."""
    text = raw.strip()
    if not _DIGITS.fullmatch(text) or len(text) > len(str(maximum)) or \
            not minimum <= int(text) <= maximum:
        shown = text if len(text) <= 20 else text[:20] + "…"
        raise NumberError(f"{name} must be a whole number from {minimum:,} to {maximum:,}, "
                          f"written with the digits 0 to 9, not {shown!r}.")
    return int(text)


@overload
def query_number(name: str, default: int, *, minimum: int = ..., maximum: int = ...) -> int: ...
@overload
def query_number(name: str, default: None = None, *, minimum: int = ...,
                 maximum: int = ...) -> int | None: ...
def query_number(name: str, default: int | None = None, *, minimum: int = 1,
                 maximum: int = MAX_ID) -> int | None:
    """Return the query parameter ``name`` as a bounded whole number, ``default`` when it is
    absent or empty; answer 400 naming it when it is anything else."""
    raw = request.args.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        return parse_whole_number(raw, name, minimum=minimum, maximum=maximum)
    except NumberError as exc:
        abort(400, str(exc))


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_JSON_DIGITS:
        raise NumberError(f"The request body holds a number with {len(text.lstrip('-')):,} "
                          f"digits; numbers may have at most {MAX_JSON_DIGITS}.")
    return int(text)


def loads_json(text: str) -> Any:
    """Parse JSON text whose integers have at most :data:`MAX_JSON_DIGITS` digits.

    Raises NumberError for a longer one, and json.JSONDecodeError for text that is not JSON.
    """
    return json.loads(text, parse_int=_bounded_int)
