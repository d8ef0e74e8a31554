"""Letter templates and the schema of their terms: loading, validation, derivation, JSON Schema.

Each template is a .docx file with a TOML schema of the same name beside it. The schema is
the single description of a template's terms; validation, the command line, the JSON Schema
and the web form all come from it.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
import tomllib
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from .errors import NotFoundError, TemplateError, TemplateProblems, TermsError
from .formatting import join_and, long_date, money, shares

__all__ = [
    "Field",
    "Party",
    "TemplateSpec",
    "DEFAULT_TEMPLATE_DIR",
    "FIELD_TYPES",
    "LIST_TYPES",
    "DERIVATIONS",
    "load_template",
    "parse_schema",
    "spec_to_raw",
    "schema_toml",
    "term_text",
    "DocumentNames",
    "document_names",
    "fill_pattern",
    "pattern_terms",
    "list_templates",
    "validate_terms",
    "terms_to_json",
    "json_schema",
    "sample_terms",
]

DEFAULT_TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "templates"
FIELD_TYPES = ("text", "date", "integer", "decimal", "boolean", "date_list", "text_list")
LIST_TYPES = ("date_list", "text_list")
DEFAULT_MAX_LENGTH = 200
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_DERIVE_RE = re.compile(r"^\s*([a-z_]+)\(\s*([a-z0-9_,\s]*)\)\s*$")
_ISO_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# ASCII digits only (int() also reads Arabic-Indic and other digits), and few enough of them.
_INTEGER_RE = re.compile(r"^[+-]?[0-9]+$")
MAX_INTEGER_DIGITS = 30
_FIELD_KEYS = {
    "label", "help", "group", "type", "example", "derive", "min", "max", "max_length",
    "decimal_places", "at_most", "before", "after", "on_or_after", "unique", "min_items",
    "max_items",
}


@dataclass(frozen=True)
class Field:
    """One variable term of a template."""

    key: str
    label: str
    type: str
    group: str
    help: str = ""
    example: Any = None
    derive: str | None = None
    min: Decimal | None = None
    max: Decimal | None = None
    max_length: int = DEFAULT_MAX_LENGTH
    decimal_places: int | None = None
    at_most: str | None = None
    before: str | None = None
    after: str | None = None
    on_or_after: str | None = None
    unique: bool = False
    min_items: int = 0
    max_items: int = 50

    @property
    def required(self) -> bool:
        """Whether a value must be given (derived fields and lists need not be)."""
        return self.derive is None and self.type not in LIST_TYPES

    @property
    def derived_from(self) -> tuple[str, ...]:
        """The fields this field's derivation reads."""
        if not self.derive:
            return ()
        match = _DERIVE_RE.match(self.derive)
        assert match
        return tuple(a.strip() for a in match.group(2).split(",") if a.strip())


@dataclass(frozen=True)
class Party:
    """One party that signs documents made from a template: ``[[parties]]`` in the schema.

    ``role`` is the key the template's signing fields name (``sign_here('company')``);
    ``name_term`` the term that holds the name printed under the party's signature line;
    ``email_term`` optionally a term that holds their email. The schema lists parties in
    signing order.
    """

    role: str
    label: str
    name_term: str
    email_term: str | None = None


@dataclass(frozen=True)
class TemplateSpec:
    """A .docx template and the schema of its terms.

    ``document_title`` and ``file_stem`` are patterns with ``{term}`` placeholders (see
    :func:`fill_pattern`); ``list_columns`` are the terms staff see in the letters table.
    """

    name: str
    title: str
    description: str
    docx_path: Path
    schema_path: Path
    groups: dict[str, str]
    fields: dict[str, Field] = field(default_factory=dict)
    parties: tuple[Party, ...] = ()
    document_title: str = ""
    file_stem: str = ""
    list_columns: tuple[str, ...] = ()

    @property
    def signers(self) -> tuple[str, ...]:
        """The parties' roles, in signing order."""
        return tuple(p.role for p in self.parties)

    def party(self, role: str) -> Party:
        """Return the party of a role, or raise KeyError."""
        for p in self.parties:
            if p.role == role:
                return p
        raise KeyError(role)

    def fields_in_group(self, group: str) -> list[Field]:
        """List the fields of one form section, in schema order."""
        return [f for f in self.fields.values() if f.group == group]


_PLACEHOLDER_RE = re.compile(r"\{([a-z][a-z0-9_]{0,63})\}")


def pattern_terms(pattern: str) -> list[str]:
    """Return the term names a ``{term}`` pattern uses, in order."""
    return _PLACEHOLDER_RE.findall(pattern)


def fill_pattern(pattern: str, values: Mapping[str, Any]) -> str:
    """Fill a ``{term}`` pattern with values as text ("Letter of {name}" -> "Letter of Ann").

    Dates are written as the letter writes them ("July 24, 2006"); ``{{`` and ``}}`` stand
    for literal braces. A term missing from ``values`` raises KeyError.
    """
    def value(match: re.Match[str]) -> str:
        item = values[match.group(1)]
        if isinstance(item, dt.date):
            return long_date(item)
        return "" if item is None else str(item)

    text = _PLACEHOLDER_RE.sub(value, pattern.replace("{{", "\x00").replace("}}", "\x01"))
    return " ".join(text.replace("\x00", "{").replace("\x01", "}").split())


# --- derivations ----------------------------------------------------------------------------

def _next_day(day: dt.date) -> dt.date:
    return day + dt.timedelta(days=1)


def _add_months(day: dt.date, months: int) -> dt.date:
    month_index = day.month - 1 + int(months)
    year, month = day.year + month_index // 12, month_index % 12 + 1
    return dt.date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def _whole_years_between(start: dt.date, end: dt.date) -> int:
    return round((end - start).days / 365.2425)


DERIVATIONS: dict[str, Callable[..., Any]] = {
    "next_day": _next_day,
    "add_months": _add_months,
    "whole_years_between": _whole_years_between,
}
# Each derivation's argument types and the type of the value it makes.
DERIVATION_TYPES: dict[str, tuple[tuple[str, ...], str]] = {
    "next_day": (("date",), "date"),
    "add_months": (("date", "integer"), "date"),
    "whole_years_between": (("date", "date"), "integer"),
}


# --- loading --------------------------------------------------------------------------------

def list_templates(template_dir: Path = DEFAULT_TEMPLATE_DIR) -> list[str]:
    """Name every template that has both a .docx file and a .toml schema."""
    return sorted(p.stem for p in Path(template_dir).glob("*.toml")
                  if p.with_suffix(".docx").is_file())


def load_template(name: str, template_dir: Path = DEFAULT_TEMPLATE_DIR) -> TemplateSpec:
    """Load a template's schema and check that it is well formed."""
    if not _NAME_RE.match(name or ""):
        raise NotFoundError(f"There is no template named {name!r}.")
    schema_path = Path(template_dir) / f"{name}.toml"
    docx_path = schema_path.with_suffix(".docx")
    if not schema_path.is_file() or not docx_path.is_file():
        raise NotFoundError(f"There is no template named {name!r} in {template_dir}.")
    try:
        text = schema_path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise TemplateError(f"{schema_path.name}: not valid TOML ({exc}).") from exc
    return parse_schema(name, text, docx_path=docx_path, schema_path=schema_path)


def parse_schema(name: str, text: str, *, docx_path: Path | None = None,
                 schema_path: Path | None = None) -> TemplateSpec:
    """Read a template's TOML schema text; raise TemplateProblems listing every problem.

    ``docx_path`` and ``schema_path`` default to the bare names ``NAME.docx`` and
    ``NAME.toml``, which messages use (a template stored in the database has no files).
    """
    docx_path = docx_path or Path(f"{name}.docx")
    schema_path = schema_path or Path(f"{name}.toml")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TemplateProblems([f"{schema_path.name}: not valid TOML ({exc})."]) from exc
    return _parse_spec(name, raw, docx_path, schema_path)


def _text_setting(where: str, spec: Mapping[str, Any], key: str) -> str | None:
    value = spec.get(key)
    if value is not None and not isinstance(value, str):
        raise TemplateError(f"{where}: {key} must be text, not {value!r}.")
    return value


def _whole_setting(where: str, spec: Mapping[str, Any], key: str, default: int,
                   least: int) -> int:
    value = spec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise TemplateError(f"{where}: {key} must be a whole number of at least {least}, "
                            f"not {value!r}.")
    return value


def _number_setting(where: str, spec: Mapping[str, Any], key: str) -> Decimal | None:
    if key not in spec:
        return None
    value = spec[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TemplateError(f"{where}: {key} must be a number, not {value!r}.")
    number = Decimal(str(value))
    if not number.is_finite():
        raise TemplateError(f"{where}: {key} must be a finite number.")
    return number


def _parse_field(where: str, key: str, spec: Any, groups: Mapping[str, str]) -> Field:
    at = f"{where}: field {key}"
    if not _NAME_RE.match(key):
        raise TemplateError(f"{where}: field name {key!r} must be lower_snake_case.")
    if not isinstance(spec, dict):
        raise TemplateError(f"{at} must be a table of settings ([fields.{key}]).")
    unknown = set(spec) - _FIELD_KEYS
    if unknown:
        raise TemplateError(f"{at} has unknown settings {sorted(unknown)}.")
    if spec.get("type") not in FIELD_TYPES:
        raise TemplateError(f"{at} has type {spec.get('type')!r}; "
                            f"use one of {', '.join(FIELD_TYPES)}.")
    group = spec.get("group", "")
    if group not in groups:
        raise TemplateError(f"{at} is in group {group!r}, which [groups] does not name.")
    texts = {k: _text_setting(at, spec, k) for k in (
        "label", "help", "derive", "at_most", "before", "after", "on_or_after")}
    if not isinstance(spec.get("unique", False), bool):
        raise TemplateError(f"{at}: unique must be true or false.")
    places = spec.get("decimal_places")
    if places is not None:
        places = _whole_setting(at, spec, "decimal_places", 0, 0)
    return Field(
        key=key, label=(texts["label"] or key).strip() or key, type=spec["type"], group=group,
        help=texts["help"] or "", example=spec.get("example"), derive=texts["derive"],
        max_length=_whole_setting(at, spec, "max_length", DEFAULT_MAX_LENGTH, 1),
        decimal_places=places, at_most=texts["at_most"], before=texts["before"],
        after=texts["after"], on_or_after=texts["on_or_after"],
        unique=bool(spec.get("unique", False)),
        min_items=_whole_setting(at, spec, "min_items", 0, 0),
        max_items=_whole_setting(at, spec, "max_items", 50, 1),
        min=_number_setting(at, spec, "min"), max=_number_setting(at, spec, "max"),
    )


def _rule_problems(where: str, f: Field, fields: Mapping[str, Field]) -> list[str]:
    """Say what is wrong with a field's rules: unknown fields, or rules of the wrong type."""
    at = f"{where}: field {f.key}"
    problems = []
    for ref in (f.at_most, f.before, f.after, f.on_or_after, *f.derived_from):
        if ref is not None and ref not in fields:
            problems.append(f"{at} refers to unknown field {ref!r}.")
    if problems:
        return problems
    for rule in ("before", "after", "on_or_after"):
        ref = getattr(f, rule)
        if ref is None:
            continue
        if f.type not in ("date", "date_list") or fields[ref].type != "date":
            problems.append(f"{at}: {rule} compares dates; it needs a date field (or a list "
                            f"of dates) and another date field, not {f.type} and "
                            f"{fields[ref].type}.")
    if f.at_most is not None and (f.type not in ("integer", "decimal")
                                  or fields[f.at_most].type not in ("integer", "decimal")):
        problems.append(f"{at}: at_most compares numbers; {f.key} and {f.at_most} must both "
                        "be integer or decimal fields.")
    if (f.min is not None or f.max is not None) and f.type not in ("integer", "decimal"):
        problems.append(f"{at}: min and max are for integer and decimal fields.")
    if f.decimal_places is not None and f.type != "decimal":
        problems.append(f"{at}: decimal_places is for decimal fields.")
    if f.min is not None and f.max is not None and f.min > f.max:
        problems.append(f"{at}: min is more than max.")
    if f.min_items > f.max_items:
        problems.append(f"{at}: min_items is more than max_items.")
    if f.derive:
        match = _DERIVE_RE.match(f.derive)
        if not match or match.group(1) not in DERIVATIONS:
            problems.append(f"{at} has derivation {f.derive!r}; use one of "
                            f"{', '.join(DERIVATIONS)}.")
        else:
            arguments, result = DERIVATION_TYPES[match.group(1)]
            given = tuple(fields[a].type for a in f.derived_from)
            if given != arguments or f.type != result:
                problems.append(f"{at}: {match.group(1)} takes {', '.join(arguments)} and "
                                f"gives a {result}, not {', '.join(given) or 'nothing'} to a "
                                f"{f.type}.")
    return problems


def _parse_spec(name: str, raw: dict[str, Any], docx_path: Path, schema_path: Path) -> TemplateSpec:
    where = schema_path.name
    problems: list[str] = []
    meta = raw.get("template", {})
    if not isinstance(meta, dict):
        problems.append(f"{where}: [template] must be a table.")
        meta = {}
    groups = raw.get("groups", {})
    if not isinstance(groups, dict) or not all(isinstance(v, str) for v in groups.values()):
        problems.append(f'{where}: [groups] must map each group to its title, as in '
                        f'main = "Terms".')
        groups = {}
    groups = dict(groups)
    raw_fields = raw.get("fields")
    if not isinstance(raw_fields, dict) or not raw_fields:
        raise TemplateProblems([*problems, f"{where}: no [fields.*] tables."])
    fields: dict[str, Field] = {}
    for key, spec in raw_fields.items():
        try:
            fields[key] = _parse_field(where, key, spec, groups)
        except TemplateError as exc:
            problems.append(str(exc))
    for f in fields.values():
        problems += _rule_problems(where, f, fields)
    if "signers" in meta:
        problems.append(f"{where}: [template] signers is replaced by [[parties]] tables "
                        "(role, label, name, and optionally email).")
    parties: tuple[Party, ...] = ()
    try:
        parties = _parse_parties(where, raw.get("parties", []), fields)
    except TemplateError as exc:
        problems.append(str(exc))
    texts = {}
    for key in ("title", "description", "document_title", "file_stem"):
        try:
            texts[key] = _text_setting(f"{where}: [template]", meta, key)
        except TemplateError as exc:
            problems.append(str(exc))
            texts[key] = None
    title = texts["title"] or name
    document_title = texts["document_title"] or title
    file_stem = texts["file_stem"] or name.replace("_", "-")
    list_columns = meta.get("list_columns", [])
    if not isinstance(list_columns, list) or not all(isinstance(c, str) for c in list_columns):
        problems.append(f"{where}: [template] list_columns must be a list of field names.")
        list_columns = []
    for what, pattern in (("document_title", document_title), ("file_stem", file_stem)):
        for term in pattern_terms(pattern):
            if term not in fields:
                problems.append(f"{where}: [template] {what} uses {{{term}}}, which is not "
                                "a field.")
    for term in list_columns:
        if term not in fields:
            problems.append(f"{where}: [template] list_columns names {term!r}, which is "
                            "not a field.")
    if problems:
        raise TemplateProblems(problems)
    return TemplateSpec(
        name=name, title=title, description=texts["description"] or "",
        docx_path=docx_path, schema_path=schema_path, groups=groups, fields=fields,
        parties=parties, document_title=document_title, file_stem=file_stem,
        list_columns=tuple(list_columns),
    )


_PARTY_KEYS = {"role", "label", "name", "email"}


def _parse_parties(where: str, raw: Any, fields: Mapping[str, Field]) -> tuple[Party, ...]:
    if not isinstance(raw, list):
        raise TemplateError(f"{where}: parties must be [[parties]] tables.")
    parties: list[Party] = []
    for index, item in enumerate(raw, start=1):
        at = f"{where}: party {index}"
        if not isinstance(item, dict):
            raise TemplateError(f"{at} must be a table with role, label and name.")
        unknown = set(item) - _PARTY_KEYS
        if unknown:
            raise TemplateError(f"{at} has unknown settings {sorted(unknown)}.")
        role = item.get("role")
        if not isinstance(role, str) or not _NAME_RE.match(role):
            raise TemplateError(f"{at}: role must be lower_snake_case, as in \"company\".")
        if any(p.role == role for p in parties):
            raise TemplateError(f"{at}: role {role!r} is declared twice.")
        name_term = item.get("name")
        if not isinstance(name_term, str) or name_term not in fields \
                or fields[name_term].type != "text":
            raise TemplateError(f"{at} ({role}): name must be a text field holding the name "
                                f"printed under the signature line, not {name_term!r}.")
        email_term = item.get("email")
        if email_term is not None and (not isinstance(email_term, str)
                                       or email_term not in fields
                                       or fields[email_term].type != "text"):
            raise TemplateError(f"{at} ({role}): email must be a text field, not "
                                f"{email_term!r}.")
        parties.append(Party(role=role, label=str(item.get("label") or role.capitalize()),
                             name_term=name_term, email_term=email_term))
    return tuple(parties)


# --- parsing single values ------------------------------------------------------------------

class _Invalid(Exception):
    """A value does not parse; the message completes "<field>: ..."."""


def _parse_date(value: Any) -> dt.date:
    if isinstance(value, dt.datetime):
        raise _Invalid("must be a date, not a date and time")
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str) and _ISO_DATE_RE.match(value.strip()):
        try:
            return dt.date.fromisoformat(value.strip())
        except ValueError:
            raise _Invalid(f"{value.strip()!r} is not a real calendar date") from None
    raise _Invalid("must be a date written YYYY-MM-DD")


def _parse_text(value: Any, max_length: int) -> str:
    if not isinstance(value, str):
        raise _Invalid("must be text")
    text = value.strip()
    if not text:
        raise _Invalid("is required")
    bad = [c for c in text if unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp")]
    if bad:
        raise _Invalid(f"contains a control character (U+{ord(bad[0]):04X}); "
                       "remove it and type the text again")
    if len(text) > max_length:
        raise _Invalid(f"is {len(text)} characters long; the limit is {max_length}")
    return text


def _parse_value(f: Field, value: Any) -> Any:
    if f.type == "text":
        return _parse_text(value, f.max_length)
    if f.type == "date":
        return _parse_date(value)
    if f.type == "integer":
        if isinstance(value, bool):
            raise _Invalid("must be a whole number")
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, str) and _INTEGER_RE.match(value.strip().replace(",", "")):
            digits = value.strip().replace(",", "").lstrip("+-")
            if len(digits) > MAX_INTEGER_DIGITS:
                raise _Invalid(f"must be a whole number of at most {MAX_INTEGER_DIGITS} digits")
            value = int(value.strip().replace(",", ""))
        if not isinstance(value, int):
            raise _Invalid("must be a whole number")
        return value
    if f.type == "decimal":
        if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
            raise _Invalid("must be an amount such as 500 or 1250.50")
        text = str(value).strip().replace(",", "").lstrip("$")
        if not text.isascii():  # Decimal() also reads other scripts' digits
            raise _Invalid("must be an amount such as 500 or 1250.50")
        try:
            amount = Decimal(text)
        except InvalidOperation:
            raise _Invalid("must be an amount such as 500 or 1250.50") from None
        if not amount.is_finite():
            raise _Invalid("must be an amount such as 500 or 1250.50")
        if f.decimal_places is not None:
            exponent = amount.normalize().as_tuple().exponent
            if isinstance(exponent, int) and -exponent > f.decimal_places:
                raise _Invalid(f"may have at most {f.decimal_places} decimals")
        return amount
    if f.type == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no"):
            return value.strip().lower() in ("true", "yes")
        raise _Invalid("must be true or false")
    if f.type == "date_list":
        if isinstance(value, str):
            value = [v for v in (p.strip() for p in value.split(";")) if v]
        if not isinstance(value, list | tuple):
            raise _Invalid("must be a list of dates written YYYY-MM-DD")
        dates = []
        for index, item in enumerate(value, start=1):
            try:
                dates.append(_parse_date(item))
            except _Invalid as exc:
                raise _Invalid(f"date {index} {exc}") from None
        return dates
    if f.type == "text_list":
        if isinstance(value, str):
            value = [v for v in (p.strip() for p in value.split(";")) if v]
        if not isinstance(value, list | tuple):
            raise _Invalid("must be a list of texts")
        texts = []
        for index, item in enumerate(value, start=1):
            try:
                texts.append(_parse_text(item, f.max_length))
            except _Invalid as exc:
                raise _Invalid(f"item {index} {exc}") from None
        return texts
    raise AssertionError(f.type)


def _describe(f: Field, value: Any) -> str:
    if isinstance(value, dt.date):
        return long_date(value)
    if f.type == "integer":
        return shares(value)
    return str(value)


def _check_bounds(f: Field, value: Any) -> None:
    if f.type in ("integer", "decimal"):
        if f.min is not None and value < f.min:
            raise _Invalid("must be greater than zero" if f.min in (Decimal("0.01"), 1)
                           and value <= 0 else f"must be at least {_plain(f.min)}")
        if f.max is not None and value > f.max:
            raise _Invalid(f"must be at most {_plain(f.max)}")
    if f.type in LIST_TYPES:
        noun = "date" if f.type == "date_list" else "item"
        if len(value) < f.min_items:
            raise _Invalid(f"needs at least {f.min_items} {noun}(s)")
        if len(value) > f.max_items:
            raise _Invalid(f"may list at most {f.max_items} {noun}s")
        if f.unique:
            seen: set[Any] = set()
            for item in value:
                if item in seen:
                    shown = long_date(item) if isinstance(item, dt.date) else f"“{item}”"
                    raise _Invalid(f"lists {shown} twice")
                seen.add(item)


def _plain(number: Decimal) -> str:
    return f"{number:,f}".rstrip("0").rstrip(".") if "." in f"{number:f}" else f"{number:,f}"


# --- validation -----------------------------------------------------------------------------

def validate_terms(spec: TemplateSpec, raw: Mapping[str, Any]) -> dict[str, Any]:
    """Parse, derive and check a letter's terms; raise TermsError naming every bad field.

    Returns the terms as typed values (``date``, ``int``, ``Decimal``, ``bool``, ``str``,
    ``list[date]``), in schema order, with derived fields filled in where they were absent.
    """
    if not isinstance(raw, Mapping):
        raise TermsError({"terms": "must be a JSON object of term keys and values"})
    errors: dict[str, str] = {}
    values: dict[str, Any] = {}
    for key in raw:
        if key not in spec.fields:
            errors[str(key)[:80]] = f"is not a term of the {spec.name} template"
    for f in spec.fields.values():
        value = raw.get(f.key)
        if value is None or (isinstance(value, str) and not value.strip() and f.type != "text"):
            if f.required and not (f.type == "text" and value is not None):
                errors[f.key] = "is required"
            elif f.type == "text" and value is not None:
                errors[f.key] = "is required"
            elif f.type in LIST_TYPES:
                values[f.key] = []
            continue
        try:
            values[f.key] = _parse_value(f, value)
            _check_bounds(f, values[f.key])
        except _Invalid as exc:
            errors[f.key] = str(exc)
            values.pop(f.key, None)
    for f in spec.fields.values():
        if f.key in values or f.key in errors or not f.derive:
            continue
        sources = f.derived_from
        missing = [s for s in sources if s not in values]
        if missing:
            if not any(s in errors for s in missing):
                errors[f.key] = f"is required (it is computed from {', '.join(missing)})"
            continue
        name = _DERIVE_RE.match(f.derive).group(1)  # type: ignore[union-attr]
        try:
            values[f.key] = DERIVATIONS[name](*(values[s] for s in sources))
            _check_bounds(f, values[f.key])
        except (_Invalid, ValueError, OverflowError) as exc:
            errors[f.key] = f"could not be computed from {', '.join(sources)} ({exc})"
            values.pop(f.key, None)
    for f in spec.fields.values():
        if f.key not in values or f.key in errors:
            continue
        message = _cross_check(spec, f, values)
        if message:
            errors[f.key] = message
    if errors:
        raise TermsError(errors)
    return {key: values[key] for key in spec.fields if key in values}


def _cross_check(spec: TemplateSpec, f: Field, values: dict[str, Any]) -> str | None:
    value = values[f.key]
    if f.at_most and f.at_most in values and value > values[f.at_most]:
        other = spec.fields[f.at_most]
        return f"cannot exceed the {_describe(other, values[f.at_most])} {other.label.lower()}"
    dates = value if f.type == "date_list" else [value]
    for rule, ok, phrase in (
        (f.before, lambda d, o: d < o, "must be before"),
        (f.after, lambda d, o: d > o, "must be after"),
        (f.on_or_after, lambda d, o: d >= o, "cannot be before"),
    ):
        if rule and rule in values:
            other = values[rule]
            for day in dates:
                if not ok(day, other):
                    subject = f"{long_date(day)} " if f.type == "date_list" else ""
                    return (f"{subject}{phrase} the {spec.fields[rule].label.lower()} "
                            f"({long_date(other)})").strip()
    return None


# --- JSON -----------------------------------------------------------------------------------

def terms_to_json(spec: TemplateSpec, terms: Mapping[str, Any]) -> dict[str, Any]:
    """Turn typed terms into JSON values: ISO dates, decimals as strings."""
    out: dict[str, Any] = {}
    for key, value in terms.items():
        if isinstance(value, dt.date):
            out[key] = value.isoformat()
        elif isinstance(value, Decimal):
            out[key] = _decimal_text(value)
        elif isinstance(value, list):
            out[key] = [v.isoformat() if isinstance(v, dt.date) else v for v in value]
        else:
            out[key] = value
    return out


def _decimal_text(value: Decimal) -> str:
    if value == value.to_integral_value():
        return str(int(value))
    return f"{value.quantize(Decimal('0.01')):f}"


def sample_terms(spec: TemplateSpec) -> dict[str, Any]:
    """Return the example terms of a template (its schema's ``example`` values)."""
    return {f.key: f.example for f in spec.fields.values() if f.example is not None}


def json_schema(spec: TemplateSpec) -> dict[str, Any]:
    """Describe a template's terms as a JSON Schema (draft 2020-12)."""
    properties: dict[str, Any] = {}
    for f in spec.fields.values():
        prop: dict[str, Any] = {"title": f.label, "description": f.help}
        if f.type == "text":
            prop.update(type="string", minLength=1, maxLength=f.max_length,
                        pattern=r"^[^\u0000-\u001f\u007f]*$")
        elif f.type == "date":
            prop.update(type="string", format="date")
        elif f.type == "integer":
            prop.update(type="integer")
        elif f.type == "decimal":
            prop.update(type=["number", "string"], pattern=r"^\d+(\.\d{1,2})?$")
        elif f.type == "boolean":
            prop.update(type="boolean")
        elif f.type == "date_list":
            prop.update(type="array", items={"type": "string", "format": "date"},
                        minItems=f.min_items, maxItems=f.max_items, uniqueItems=f.unique)
        elif f.type == "text_list":
            prop.update(type="array", items={"type": "string", "minLength": 1,
                                             "maxLength": f.max_length,
                                             "pattern": r"^[^\u0000-\u001f\u007f]*$"},
                        minItems=f.min_items, maxItems=f.max_items, uniqueItems=f.unique)
        if f.type in ("integer", "decimal"):
            if f.min is not None:
                prop["minimum"] = int(f.min) if f.type == "integer" else float(f.min)
            if f.max is not None:
                prop["maximum"] = int(f.max) if f.type == "integer" else float(f.max)
        if f.example is not None:
            prop["examples"] = [f.example]
        if f.derive:
            prop["x-derived"] = f.derive
        prop["x-group"] = f.group
        properties[f.key] = prop
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"counterpart:templates/{spec.name}",
        "title": spec.title,
        "description": spec.description,
        "type": "object",
        "properties": properties,
        "required": [f.key for f in spec.fields.values() if f.required],
        "additionalProperties": False,
    }


def term_text(f: Field, value: Any) -> str:
    """Write a typed term as a letter would: "July 24, 2006", "$500", "2,000,000", "A and B"."""
    if value is None:
        return ""
    if f.type == "date" and isinstance(value, dt.date):
        return long_date(value)
    if f.type == "integer" and isinstance(value, int):
        return shares(value)
    if f.type == "decimal" and isinstance(value, Decimal):
        return money(value)
    if f.type == "boolean":
        return "Yes" if value else "No"
    if f.type in LIST_TYPES and isinstance(value, list):
        return join_and(long_date(v) if isinstance(v, dt.date) else str(v) for v in value)
    return str(value)


@dataclass(frozen=True)
class DocumentNames:
    """What a letter is called, its files' name stem, and the terms the letters table shows."""

    title: str
    file_stem: str
    columns: tuple[tuple[str, str, str], ...]
    """(term, label, value as the letter writes it), in ``list_columns`` order."""


def document_names(spec: TemplateSpec, terms: Mapping[str, Any]) -> DocumentNames:
    """Fill a template's ``document_title``, ``file_stem`` and ``list_columns`` with typed terms.

    The file stem is slugged (ASCII, lower case, hyphens); a term missing from ``terms``
    reads as empty.
    """
    from .text import file_slug

    written = {key: term_text(f, terms.get(key)) for key, f in spec.fields.items()}
    title = fill_pattern(spec.document_title, written)[:300]
    stem = file_slug(fill_pattern(spec.file_stem, written), default=file_slug(spec.name))
    columns = tuple((key, spec.fields[key].label, written[key][:300])
                    for key in spec.list_columns)
    return DocumentNames(title=title or spec.title, file_stem=stem, columns=columns)


# --- writing a schema -----------------------------------------------------------------------

_FIELD_DEFAULTS: dict[str, Any] = {
    "help": "", "example": None, "derive": None, "min": None, "max": None,
    "max_length": DEFAULT_MAX_LENGTH, "decimal_places": None, "at_most": None, "before": None,
    "after": None, "on_or_after": None, "unique": False, "min_items": 0, "max_items": 50,
}


def _plain_number(value: Decimal) -> int | float:
    return int(value) if value == value.to_integral_value() else float(value)


def spec_to_raw(spec: TemplateSpec) -> dict[str, Any]:
    """Return a spec as the tables of its TOML schema (only settings that differ from defaults)."""
    meta: dict[str, Any] = {"title": spec.title}
    if spec.description:
        meta["description"] = spec.description
    meta["document_title"] = spec.document_title
    meta["file_stem"] = spec.file_stem
    meta["list_columns"] = list(spec.list_columns)
    fields: dict[str, Any] = {}
    for f in spec.fields.values():
        table: dict[str, Any] = {"label": f.label, "group": f.group, "type": f.type}
        for key, default in _FIELD_DEFAULTS.items():
            value = getattr(f, key)
            if value != default:
                table[key] = _plain_number(value) if isinstance(value, Decimal) else value
        fields[f.key] = table
    parties = []
    for p in spec.parties:
        party = {"role": p.role, "label": p.label, "name": p.name_term}
        if p.email_term:
            party["email"] = p.email_term
        parties.append(party)
    return {"template": meta, "parties": parties, "groups": dict(spec.groups),
            "fields": fields}


_TOML_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n",
                 "\f": "\\f", "\r": "\\r"}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Decimal):
        return repr(_plain_number(value))
    if isinstance(value, dt.date):
        return _toml_value(value.isoformat())
    if isinstance(value, str):
        out = []
        for c in value:
            if c in _TOML_ESCAPES:
                out.append(_TOML_ESCAPES[c])
            elif ord(c) < 0x20 or ord(c) == 0x7F:
                out.append(f"\\u{ord(c):04X}")
            else:
                out.append(c)
        return '"' + "".join(out) + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"a schema holds no {type(value).__name__} values")


def schema_toml(raw: Mapping[str, Any]) -> str:
    """Write a schema's tables (see :func:`spec_to_raw`) as TOML that :func:`parse_schema` reads."""
    lines: list[str] = []

    def table(header: str, values: Mapping[str, Any]) -> None:
        lines.append(header)
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in values.items()
                     if value is not None)
        lines.append("")

    table("[template]", raw.get("template", {}))
    for party in raw.get("parties", []):
        table("[[parties]]", party)
    table("[groups]", raw.get("groups", {}))
    for key, values in raw.get("fields", {}).items():
        table(f"[fields.{key}]", values)
    return "\n".join(lines)
