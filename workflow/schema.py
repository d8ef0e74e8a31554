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

from .errors import NotFoundError, TemplateError, TermsError
from .formatting import long_date, shares

__all__ = [
    "Field",
    "Party",
    "TemplateSpec",
    "DEFAULT_TEMPLATE_DIR",
    "FIELD_TYPES",
    "load_template",
    "fill_pattern",
    "pattern_terms",
    "list_templates",
    "validate_terms",
    "terms_to_json",
    "json_schema",
    "sample_terms",
]

DEFAULT_TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "templates"
FIELD_TYPES = ("text", "date", "integer", "decimal", "boolean", "date_list")
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
        return self.derive is None and self.type != "date_list"

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
        raw = tomllib.loads(schema_path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise TemplateError(f"{schema_path.name}: not valid TOML ({exc}).") from exc
    return _parse_spec(name, raw, docx_path, schema_path)


def _parse_spec(name: str, raw: dict[str, Any], docx_path: Path, schema_path: Path) -> TemplateSpec:
    where = schema_path.name
    meta = raw.get("template", {})
    groups = dict(raw.get("groups", {}))
    raw_fields = raw.get("fields")
    if not isinstance(raw_fields, dict) or not raw_fields:
        raise TemplateError(f"{where}: no [fields.*] tables.")
    fields: dict[str, Field] = {}
    for key, spec in raw_fields.items():
        if not _NAME_RE.match(key):
            raise TemplateError(f"{where}: field name {key!r} must be lower_snake_case.")
        unknown = set(spec) - _FIELD_KEYS
        if unknown:
            raise TemplateError(f"{where}: field {key} has unknown settings {sorted(unknown)}.")
        if spec.get("type") not in FIELD_TYPES:
            raise TemplateError(f"{where}: field {key} has type {spec.get('type')!r}; "
                                f"use one of {', '.join(FIELD_TYPES)}.")
        group = spec.get("group", "")
        if group not in groups:
            raise TemplateError(f"{where}: field {key} is in group {group!r}, "
                                "which [groups] does not name.")
        numbers = {k: Decimal(str(spec[k])) for k in ("min", "max") if k in spec}
        fields[key] = Field(
            key=key, label=spec.get("label", key), type=spec["type"], group=group,
            help=spec.get("help", ""), example=spec.get("example"), derive=spec.get("derive"),
            max_length=int(spec.get("max_length", DEFAULT_MAX_LENGTH)),
            decimal_places=spec.get("decimal_places"), at_most=spec.get("at_most"),
            before=spec.get("before"), after=spec.get("after"),
            on_or_after=spec.get("on_or_after"), unique=bool(spec.get("unique", False)),
            min_items=int(spec.get("min_items", 0)), max_items=int(spec.get("max_items", 50)),
            **numbers,
        )
    for f in fields.values():
        for ref in (f.at_most, f.before, f.after, f.on_or_after, *f.derived_from):
            if ref is not None and ref not in fields:
                raise TemplateError(f"{where}: field {f.key} refers to unknown field {ref!r}.")
        if f.derive:
            match = _DERIVE_RE.match(f.derive)
            if not match or match.group(1) not in DERIVATIONS:
                raise TemplateError(f"{where}: field {f.key} has derivation {f.derive!r}; "
                                    f"use one of {', '.join(DERIVATIONS)}.")
    if "signers" in meta:
        raise TemplateError(f"{where}: [template] signers is replaced by [[parties]] tables "
                            "(role, label, name, and optionally email).")
    parties = _parse_parties(where, raw.get("parties", []), fields)
    document_title = str(meta.get("document_title") or meta.get("title", name))
    file_stem = str(meta.get("file_stem") or name.replace("_", "-"))
    list_columns = tuple(meta.get("list_columns", ()))
    for what, pattern in (("document_title", document_title), ("file_stem", file_stem)):
        for term in pattern_terms(pattern):
            if term not in fields:
                raise TemplateError(f"{where}: [template] {what} uses {{{term}}}, which is not "
                                    "a field.")
    for term in list_columns:
        if term not in fields:
            raise TemplateError(f"{where}: [template] list_columns names {term!r}, which is "
                                "not a field.")
    return TemplateSpec(
        name=name, title=meta.get("title", name), description=meta.get("description", ""),
        docx_path=docx_path, schema_path=schema_path, groups=groups, fields=fields,
        parties=parties, document_title=document_title, file_stem=file_stem,
        list_columns=list_columns,
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
        if name_term not in fields or fields[name_term].type != "text":
            raise TemplateError(f"{at} ({role}): name must be a text field holding the name "
                                f"printed under the signature line, not {name_term!r}.")
        email_term = item.get("email")
        if email_term is not None and (email_term not in fields
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


def _parse_value(f: Field, value: Any) -> Any:
    if f.type == "text":
        if not isinstance(value, str):
            raise _Invalid("must be text")
        text = value.strip()
        if not text:
            raise _Invalid("is required")
        bad = [c for c in text if unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp")]
        if bad:
            raise _Invalid(f"contains a control character (U+{ord(bad[0]):04X}); "
                           "remove it and type the text again")
        if len(text) > f.max_length:
            raise _Invalid(f"is {len(text)} characters long; the limit is {f.max_length}")
        return text
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
    if f.type == "date_list":
        if len(value) < f.min_items:
            raise _Invalid(f"needs at least {f.min_items} date(s)")
        if len(value) > f.max_items:
            raise _Invalid(f"may list at most {f.max_items} dates")
        if f.unique:
            seen: set[dt.date] = set()
            for day in value:
                if day in seen:
                    raise _Invalid(f"lists {long_date(day)} twice")
                seen.add(day)


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
            elif f.type == "date_list":
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
            out[key] = [v.isoformat() for v in value]
        else:
            out[key] = value
    return out


def _decimal_text(value: Decimal) -> str:
    if value == value.to_integral_value():
        return str(int(value))
    return f"{value.quantize(Decimal('0.01')):f}"


def sample_terms(spec: TemplateSpec) -> dict[str, Any]:
    """Return the example terms of a template (for the separation letter, the 2006 letter's)."""
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
