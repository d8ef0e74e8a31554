"""The review before sending: what a careful lawyer checks in a letter's current version.

:func:`review_letter` lists it as warnings, each with a code, the term it concerns (or None)
and a sentence: whether anyone on staff has looked at this version's PDF, and which terms
changed since the last version anyone saw; dates out of order, far from today, or past when
they should be ahead; every derived term with how it was derived (the rounding, the words the
letter writes it in, and that typing a value overrides it); and the parties with their emails.
Warnings never block anything. The checks read the schema only (its field types, rules and
derivations), so they fit every template.

A member of staff has looked at a version when its PDF was downloaded for review
(:func:`record_review_download`, a ``downloaded`` event naming the version) or viewed
(a staff ``viewed`` event naming it); signers see a version when they open their link.
"""

from __future__ import annotations

import datetime as dt
import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Any

from markupsafe import Markup
from sqlalchemy import select
from sqlalchemy.orm import Session

from .audit import record_event
from .errors import CounterpartError
from .formatting import long_date
from .models import Counterpart, Document, Envelope, Event, Letter, LetterVersion
from .schema import DERIVATIONS, Field, TemplateSpec, term_text

__all__ = ["Warning", "review_letter", "review_terms", "record_review_download",
           "seen_versions", "REVIEW_EVENT_TYPES"]

REVIEW_EVENT_TYPES = ("downloaded", "viewed")
_FORWARD_DERIVATIONS = {"next_day", "add_months"}
_EXPRESSION = r"\{\{-?\s*%s((?:\s*\|\s*[a-z_]+(?:\s*\([^{}()]*\))?)*)\s*-?\}\}"


@dataclass(frozen=True)
class Warning:
    """One thing to check before sending: ``code`` says what kind, ``field`` the term it
    concerns (None for the letter as a whole), ``message`` the sentence staff read."""

    code: str
    field: str | None
    message: str

    def as_json(self) -> dict[str, Any]:
        """Return the warning as the API states it."""
        return asdict(self)


# --- who saw which version --------------------------------------------------------------------

@dataclass(frozen=True)
class _Sighting:
    number: int
    who: str
    at: dt.datetime
    staff: bool


def _sightings(session: Session, letter: Letter) -> list[_Sighting]:
    versions = dict(session.execute(select(LetterVersion.id, LetterVersion.number).where(
        LetterVersion.letter_id == letter.id)).all())
    pdf_names = dict(session.execute(
        select(Document.filename, LetterVersion.number)
        .join(LetterVersion, Document.version_id == LetterVersion.id)
        .where(LetterVersion.letter_id == letter.id, Document.kind == "letter_pdf")).all())
    envelopes = dict(session.execute(select(Envelope.id, Envelope.version_id).where(
        Envelope.letter_id == letter.id)).all())
    seen = []
    for event in session.scalars(select(Event).where(
            Event.letter_id == letter.id, Event.type.in_(REVIEW_EVENT_TYPES))
            .order_by(Event.sequence)):
        detail = event.detail or {}
        if event.counterpart_id is None:
            number = detail.get("version") if detail.get("kind", "letter_pdf") == "letter_pdf" \
                else None
            if not isinstance(number, int):
                number = pdf_names.get(str(detail.get("document")))
            if isinstance(number, int):
                seen.append(_Sighting(number, event.actor, event.at, True))
        elif event.type == "viewed" and event.envelope_id in envelopes:
            number = versions.get(envelopes[event.envelope_id])
            if number is not None:
                seen.append(_Sighting(number, event.actor, event.at, False))
    return seen


def seen_versions(session: Session, letter_id: int) -> dict[int, list[str]]:
    """Map each version someone has seen to who saw it (staff emails, signers' names)."""
    letter = session.get(Letter, letter_id)
    if letter is None:
        return {}
    out: dict[int, list[str]] = {}
    for sighting in _sightings(session, letter):
        names = out.setdefault(sighting.number, [])
        if sighting.who not in names:
            names.append(sighting.who)
    return out


def record_review_download(session: Session, letter_id: int, number: int, *, actor: str,
                           ip: str | None = None, user_agent: str | None = None) -> Document:
    """Record that a member of staff downloads a version's PDF to review it; return the PDF.

    Raises NotFoundError for an unknown letter or version, StateError while the PDF is not
    ready.
    """
    from .letters import get_letter, get_version, latest_document

    letter = get_letter(session, letter_id)
    version = get_version(session, letter, number)
    document = latest_document(session, version, "letter_pdf")
    if document.status != "ready" or document.blob_sha256 is None:
        from .errors import StateError

        raise StateError(f"{document.filename} is not ready yet.")
    record_event(session, letter.id, "downloaded", actor=actor, ip=ip, user_agent=user_agent,
                 detail={"document": document.filename, "version": version.number,
                         "kind": "letter_pdf", "for": "review"})
    return document


# --- the review -------------------------------------------------------------------------------

def review_letter(session: Session, letter_id: int, now: dt.datetime, *,
                  signers: Sequence[Any] | None = None) -> list[Warning]:
    """List what to check before sending the letter's current version (see the module).

    ``signers`` are the signers named on the send form (objects with ``role``, ``name`` and
    ``email``, as :class:`workflow.envelopes.SignerSpec`); when given, the parties are
    reviewed as they will be sent to, not as the terms name them. Raises NotFoundError for an
    unknown letter.
    """
    from .letters import get_letter, get_version, version_spec, version_template
    from .schema import validate_terms

    letter = get_letter(session, letter_id)
    version = get_version(session, letter)
    spec = version_spec(session, version)
    warnings = _seen_warnings(session, letter, version, spec)
    try:
        terms = validate_terms(spec, version.terms)
    except CounterpartError as exc:
        return [*warnings, Warning("terms_invalid", None,
                                   f"The terms of version {version.number} no longer pass the "
                                   f"template's checks: {exc}")]
    try:
        template: bytes | None = version_template(session, version)
    except CounterpartError:
        template = None
    return warnings + review_terms(spec, terms, now.date(), template=template,
                                   last_emails=_last_emails(session, letter), signers=signers)


def review_terms(spec: TemplateSpec, terms: Mapping[str, Any], today: dt.date, *,
                 template: bytes | None = None,
                 last_emails: Mapping[str, str] | None = None,
                 signers: Sequence[Any] | None = None) -> list[Warning]:
    """Check typed terms against the schema: dates, derived terms and parties.

    ``template`` (the .docx the terms fill) lets the derived terms say how the letter writes
    them; ``last_emails`` maps a party's role to the email its last envelope went to;
    ``signers`` are the signers named on the send form, if any (see :func:`review_letter`).
    """
    writings = {}
    if template is not None:
        try:
            writings = _writings(spec, template, terms)
        except Exception:  # an unreadable template: the review goes on without its words
            writings = {}
    return (_date_warnings(spec, terms, today) + _derived_warnings(spec, terms, writings)
            + _party_warnings(spec, terms, last_emails or {}, signers))


def _seen_warnings(session: Session, letter: Letter, version: LetterVersion,
                   spec: TemplateSpec) -> list[Warning]:
    sightings = _sightings(session, letter)
    number = version.number
    warnings = []
    if not any(s.staff and s.number == number for s in sightings):
        warnings.append(Warning(
            "not_reviewed", None,
            f"Version {number} is not yet reviewed: no one on staff has downloaded or viewed "
            "its PDF."))
    earlier = [s for s in sightings if s.number < number]
    if not earlier:
        return warnings
    last = max(earlier, key=lambda s: (s.number, s.at))
    seen = session.scalar(select(LetterVersion).where(
        LetterVersion.letter_id == letter.id, LetterVersion.number == last.number))
    if seen is None:
        return warnings
    who = f"{last.who}, on {long_date(last.at.date())}"
    since = f"since version {last.number}, the last version anyone saw ({who})"
    for key, (old, new) in _changed(spec, seen.terms, version.terms).items():
        f = spec.fields.get(key)
        label = f.label if f else key
        warnings.append(Warning(
            "changed_since_seen", key,
            f"{label} changed {since}: {_written(f, old)} → {_written(f, new)}."))
    return warnings


def _changed(spec: TemplateSpec, old: Mapping[str, Any], new: Mapping[str, Any]
             ) -> dict[str, tuple[Any, Any]]:
    from .redline import changed_terms

    return changed_terms(spec.fields, old, new)


def _typed(f: Field, stored: Any) -> Any:
    """Read a stored (JSON) term back as a typed value."""
    if f.type == "date":
        return dt.date.fromisoformat(stored)
    if f.type == "decimal":
        return Decimal(str(stored))
    if f.type == "date_list":
        return [dt.date.fromisoformat(v) for v in stored]
    return stored


def _written(f: Field | None, stored: Any) -> str:
    """Write a stored (JSON) term as the letter does; "none" when it is empty."""
    if stored is None or stored == [] or stored == "":
        return "none"
    if f is None:
        return str(stored)
    try:
        return term_text(f, _typed(f, stored))
    except (ValueError, TypeError, ArithmeticError):  # as an older schema stored it
        return str(stored)


# --- dates ------------------------------------------------------------------------------------

def _months_between(start: dt.date, end: dt.date) -> tuple[int, int, int]:
    """Whole years, months and days from ``start`` to ``end`` (``start`` <= ``end``)."""
    add_months = DERIVATIONS["add_months"]
    months = (end.year - start.year) * 12 + end.month - start.month
    if add_months(start, months) > end:
        months -= 1
    days = (end - add_months(start, months)).days
    return months // 12, months % 12, days


def _span(start: dt.date, end: dt.date) -> str:
    years, months, days = _months_between(min(start, end), max(start, end))
    parts = [f"{n} {unit}{'s' if n != 1 else ''}" for n, unit in
             ((years, "year"), (months, "month"), (days, "day")) if n]
    return " ".join(parts) or "0 days"


def _date_kinds(spec: TemplateSpec) -> dict[str, str]:
    """Say of each date field whether it looks back (``past``: it must come before another
    date), ahead (``future``: after another date, or derived forward) or neither."""
    kinds = {}
    for f in spec.fields.values():
        if f.type not in ("date", "date_list"):
            continue
        derivation = f.derive.split("(", 1)[0].strip() if f.derive else None
        if f.before:
            kinds[f.key] = "past"
        elif f.after or f.on_or_after or derivation in _FORWARD_DERIVATIONS:
            kinds[f.key] = "future"
        else:
            kinds[f.key] = "plain"
    return kinds


def _dates(f: Field, value: Any) -> list[dt.date]:
    if f.type == "date_list":
        return [v for v in value or [] if isinstance(v, dt.date)]
    return [value] if isinstance(value, dt.date) else []


def _date_warnings(spec: TemplateSpec, terms: Mapping[str, Any], today: dt.date
                   ) -> list[Warning]:
    add_months = DERIVATIONS["add_months"]
    year_ago, year_ahead = add_months(today, -12), add_months(today, 12)
    warnings = []
    kinds = _date_kinds(spec)
    written_today = long_date(today)
    for key, kind in kinds.items():
        f = spec.fields[key]
        dates = _dates(f, terms.get(key))
        for rule, holds, phrase in ((f.before, lambda d, o: d < o, "before"),
                                    (f.after, lambda d, o: d > o, "after"),
                                    (f.on_or_after, lambda d, o: d >= o, "on or after")):
            other = terms.get(rule) if rule else None
            if rule and isinstance(other, dt.date):
                for day in dates:
                    if not holds(day, other):
                        warnings.append(Warning(
                            "date_order", key,
                            f"{f.label}: {long_date(day)} should be {phrase} the "
                            f"{spec.fields[rule].label.lower()} ({long_date(other)})."))
        if f.type == "date_list" and dates != sorted(dates):
            warnings.append(Warning(
                "date_order", key,
                f"{f.label}: the dates are not in order ({', '.join(map(long_date, dates))}); "
                "the letter lists them as typed."))
        for day in dates:
            distance = _span(day, today)
            when = f"{distance} {'before' if day < today else 'after'} today ({written_today})"
            if kind == "future" and day < today:
                warnings.append(Warning(
                    "date_in_past", key,
                    f"{f.label}: {long_date(day)} is already past, {when}; it should be ahead."))
            elif kind == "past" and day > today:
                warnings.append(Warning(
                    "date_in_future", key,
                    f"{f.label}: {long_date(day)} is still ahead, {when}; it should be past."))
            elif kind != "past" and not f.derive and not year_ago <= day <= year_ahead:
                warnings.append(Warning(
                    "date_far", key,
                    f"{f.label}: {long_date(day)} is more than a year from today: {when}."))
    return warnings


# --- derived terms ----------------------------------------------------------------------------

@lru_cache(maxsize=32)
def _template_source(template: bytes) -> str:
    """The Jinja source of a template's body, headers and footers."""
    from docxtpl import DocxTemplate

    document = DocxTemplate(io.BytesIO(template))
    document.init_docx()
    source = document.patch_xml(document.get_xml())
    for uri in (document.HEADER_URI, document.FOOTER_URI):
        for _key, part in document.get_headers_footers(uri):
            source += document.patch_xml(document.get_part_xml(part))
    return re.sub(r"<[^>]+>", "", source)


def _writings(spec: TemplateSpec, template: bytes, terms: Mapping[str, Any]
              ) -> dict[str, list[str]]:
    """How the letter writes each derived term: its template's expressions, evaluated."""
    from .render import jinja_environment

    source = _template_source(template)
    env = jinja_environment(parties=spec.signers)
    out: dict[str, list[str]] = {}
    for f in spec.fields.values():
        if not f.derive or f.key not in terms:
            continue
        for match in re.finditer(_EXPRESSION % re.escape(f.key), source):
            try:
                text = env.from_string("{{ value" + match.group(1) + " }}").render(
                    value=terms[f.key])
            except Exception:  # a filter that needs more than the value: not shown
                continue
            text = Markup(text).unescape()
            if text not in out.setdefault(f.key, []):
                out[f.key].append(text)
    return out


def _derivation(spec: TemplateSpec, f: Field, terms: Mapping[str, Any]) -> tuple[Any, str]:
    """Compute a derived field from its sources and say how, in words."""
    assert f.derive
    name = f.derive.split("(", 1)[0].strip()
    sources = [spec.fields[s] for s in f.derived_from]
    values: list[Any] = [terms.get(s.key) for s in sources]
    described = [f"the {s.label.lower()} ({term_text(s, v)})" for s, v in zip(sources, values,
                                                                            strict=True)]
    value = DERIVATIONS[name](*values)
    if name == "next_day":
        how = f"the day after {described[0]}"
    elif name == "add_months":
        start, months = values
        how = (f"{described[0]} plus {months} month{'s' if months != 1 else ''}, the "
               f"{sources[1].label.lower()}")
        if value.day != start.day:
            how += (f"; {start:%B} {start.day} has no match in {value:%B} {value.year}, so it "
                    "is that month's last day")
    elif name == "whole_years_between":
        start, end = values
        years = (end - start).days / 365.2425
        how = (f"{_span(start, end)} ({years:.2f} years) from {described[0]} to "
               f"{described[1]}, rounded to the nearest whole year")
    else:
        how = f"{name} of {', '.join(described)}"
    return value, how


def _derived_warnings(spec: TemplateSpec, terms: Mapping[str, Any],
                      writings: Mapping[str, list[str]]) -> list[Warning]:
    warnings = []
    for f in spec.fields.values():
        if not f.derive or f.key not in terms:
            continue
        if any(terms.get(s) is None for s in f.derived_from):
            continue
        try:
            derived, how = _derivation(spec, f, terms)
        except (ValueError, OverflowError, TypeError):
            continue
        value = terms[f.key]
        written = writings.get(f.key, [])
        as_written = f", written as {' and '.join(f'“{w}”' for w in written)}" if written else ""
        if value == derived:
            warnings.append(Warning(
                "derived", f.key,
                f"{f.label}: {term_text(f, value)}, derived: {how}{as_written}. To use another "
                "value, type it in the terms form: a typed value overrides the derivation."))
        else:
            warnings.append(Warning(
                "derived_overridden", f.key,
                f"{f.label}: {term_text(f, value)}{as_written}, typed over the derived "
                f"{term_text(f, derived)} ({how}). Clear it in the terms form to derive it "
                "again."))
    return warnings


# --- parties ----------------------------------------------------------------------------------

def _last_emails(session: Session, letter: Letter) -> dict[str, str]:
    envelope = session.scalar(select(Envelope).where(Envelope.letter_id == letter.id)
                              .order_by(Envelope.created_at.desc()).limit(1))
    if envelope is None:
        return {}
    return {c.role: c.email for c in session.scalars(select(Counterpart).where(
        Counterpart.envelope_id == envelope.id)) if c.email}


def _party_warnings(spec: TemplateSpec, terms: Mapping[str, Any],
                    last_emails: Mapping[str, str],
                    signers: Sequence[Any] | None = None) -> list[Warning]:
    warnings = []
    names: dict[str, str] = {}
    given = {signer.role: signer for signer in signers or ()}
    for party in spec.parties:
        name = str(terms.get(party.name_term) or "")
        email = terms.get(party.email_term) if party.email_term else None
        signer = given.get(party.role)
        if signer is not None:
            name = signer.name or name
            reach = (f"email {signer.email}, from the send form" if signer.email else
                     "no email on the send form: hand the link over yourself")
        elif email:
            reach = f"email {email}"
        elif party.role in last_emails:
            reach = (f"no email in the terms; the last envelope went to "
                     f"{last_emails[party.role]}")
        else:
            reach = "no email: give one on the send form, or hand the link over yourself"
        warnings.append(Warning("party", party.name_term,
                                f"{party.label}: {name or 'no name'} ({reach})."))
        folded = " ".join(name.casefold().split())
        if folded and folded in names:
            warnings.append(Warning(
                "party_same_name", party.name_term,
                f"{party.label} and {names[folded]} are both {name}: one person would sign "
                "twice."))
        names.setdefault(folded, party.label)
    return warnings
