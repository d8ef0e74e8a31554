"""Jinja filters that turn typed terms into the words of a letter.

Templates format values with these named filters (``{{ letter_date|long_date }}``), never with
strings prepared in Python, so that a lawyer editing a template can see and change how a value
reads.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

from num2words import num2words

__all__ = ["FILTERS", "long_date", "month_year", "number_words", "count_of", "period_adjective",
           "with_article", "money", "shares", "join_and", "long_dates"]

# Words that start with a vowel letter but a consonant sound, and the reverse.
_CONSONANT_SOUND_PREFIXES = ("one", "once", "uni", "use", "usu", "eu", "ewe")
_VOWEL_SOUND_PREFIXES = ("hour", "honest", "honor", "honour", "heir")


def long_date(value: dt.date) -> str:
    """Format a date as in "July 24, 2006"."""
    return f"{value:%B} {value.day}, {value.year}"


def long_dates(values: Iterable[dt.date]) -> list[str]:
    """Format each date of a list as :func:`long_date` does."""
    return [long_date(v) for v in values]


def month_year(value: dt.date) -> str:
    """Format a date's month and year as in "July, 2006"."""
    return f"{value:%B}, {value.year}"


def number_words(value: int) -> str:
    """Spell a whole number in words, as in "twenty-five" or "one hundred five"."""
    # num2words writes British "one hundred and five"; American legal style drops the "and".
    return num2words(int(value), lang="en").replace(" and ", " ").replace(",", "")


def count_of(value: int, singular: str, plural: str | None = None) -> str:
    """Spell a count with its noun, as in "ten hours" or "one year"."""
    noun = singular if int(value) == 1 else (plural or singular + "s")
    return f"{number_words(value)} {noun}"


def period_adjective(months: int) -> str:
    """Name a period of months as a hyphenated adjective: "one-year", "six-month"."""
    months = int(months)
    if months % 12 == 0:
        return f"{number_words(months // 12)}-year"
    return f"{number_words(months)}-month"


def with_article(phrase: str) -> str:
    """Put "a" or "an" before a phrase, as its first sound requires."""
    text = str(phrase)
    lowered = text.lower()
    if lowered.startswith(_VOWEL_SOUND_PREFIXES):
        article = "an"
    elif lowered.startswith(_CONSONANT_SOUND_PREFIXES):
        article = "a"
    else:
        article = "an" if lowered[:1] in "aeiou" and lowered else "a"
    return f"{article} {text}"


def money(value: Decimal | int | float | str) -> str:
    """Format US dollars: "$500", "$1,250", "$1,250.50"."""
    amount = Decimal(str(value))
    if amount == amount.to_integral_value():
        return f"${int(amount):,}"
    return f"${amount.quantize(Decimal('0.01')):,.2f}"


def shares(value: int) -> str:
    """Format a share count with thousands separators: "2,000,000"."""
    return f"{int(value):,}"


def join_and(values: Iterable[Any]) -> str:
    """Join items as in "A and B" or "A, B and C" (no serial comma)."""
    items = [str(v) for v in values]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


FILTERS: dict[str, Callable[..., Any]] = {
    "long_date": long_date,
    "long_dates": long_dates,
    "month_year": month_year,
    "number_words": number_words,
    "count_of": count_of,
    "period_adjective": period_adjective,
    "with_article": with_article,
    "money": money,
    "shares": shares,
    "join_and": join_and,
}
