"""The form that edits a draft template's schema: its title, file name, listed terms, groups,
parties, and each field's label, help, type, group, example and rules.

The form keeps what was typed, as text, and turns it into the tables of a TOML schema
(:func:`workflow.schema.schema_toml`); the domain then checks that schema against the
template, so the page refuses what the API and the command line refuse. The fields
themselves are the template's variables: the form changes what they are, not which.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from workflow.schema import FIELD_TYPES, LIST_TYPES, TemplateSpec, spec_to_raw

__all__ = ["SchemaForm", "RULES", "TYPE_LABELS"]

TYPE_LABELS = {
    "text": "Text", "date": "Date", "integer": "Whole number", "decimal": "Amount (money)",
    "boolean": "Yes or no", "date_list": "List of dates", "text_list": "List of texts",
}
# The rules a field may have, with the input each takes.
RULES = (("min", "number"), ("max", "number"), ("max_length", "whole"),
         ("decimal_places", "whole"), ("min_items", "whole"), ("max_items", "whole"),
         ("at_most", "field"), ("before", "field"), ("after", "field"),
         ("on_or_after", "field"), ("derive", "text"), ("unique", "flag"))
_INTEGER = re.compile(r"^[+-]?[0-9]{1,30}$")
_GROUP_LINE = re.compile(r"^\s*([a-z][a-z0-9_]{0,63})\s*[=:]\s*(.+?)\s*$")
MAX_PARTIES = 20


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "\n".join(str(v) for v in value)
    return str(value)


@dataclass
class SchemaForm:
    """A draft's schema as typed into the form, with the problems found in it."""

    keys: list[str]
    meta: dict[str, str]
    groups: str
    fields: dict[str, dict[str, str]]
    parties: list[dict[str, str]]
    problems: list[str] = field(default_factory=list)

    @classmethod
    def from_spec(cls, spec: TemplateSpec) -> SchemaForm:
        """The form filled with a stored schema."""
        raw = spec_to_raw(spec)
        meta = {k: _text(v) for k, v in raw["template"].items() if k != "list_columns"}
        meta["list_columns"] = ", ".join(raw["template"].get("list_columns", []))
        fields = {key: {k: _text(v) for k, v in table.items()}
                  for key, table in raw["fields"].items()}
        parties = [{k: _text(v) for k, v in p.items()} for p in raw["parties"]]
        groups = "\n".join(f"{k} = {v}" for k, v in raw["groups"].items())
        return cls(list(spec.fields), meta, groups, fields, parties)

    @classmethod
    def from_request(cls, spec: TemplateSpec, data: Mapping[str, str]) -> SchemaForm:
        """The form as posted, for the fields of ``spec`` (the draft's variables)."""
        meta = {k: data.get(k, "").strip() for k in (
            "title", "description", "document_title", "file_stem", "list_columns")}
        fields = {}
        for key in spec.fields:
            prefix = f"f-{key}-"
            values = {name: data.get(prefix + name, "") for name in (
                "label", "help", "type", "group", "example")}
            for rule, kind in RULES:
                values[rule] = ("true" if data.get(prefix + rule) else "") if kind == "flag" \
                    else data.get(prefix + rule, "").strip()
            fields[key] = values
        parties = []
        for index in range(MAX_PARTIES):
            prefix = f"p-{index}-"
            if prefix + "role" not in data:
                break
            row = {k: data.get(prefix + k, "").strip() for k in ("role", "label", "name", "email")}
            if any(row.values()):
                parties.append(row)
        return cls(list(spec.fields), meta, data.get("groups", ""), fields, parties)

    def party_rows(self) -> list[dict[str, str]]:
        """The parties' rows to show: each party, and one empty row to add another."""
        return [*self.parties, {"role": "", "label": "", "name": "", "email": ""}]

    def to_raw(self) -> dict[str, Any]:
        """The schema's tables; what cannot be read is added to ``problems``."""
        meta: dict[str, Any] = {"title": self.meta.get("title", "")}
        if self.meta.get("description"):
            meta["description"] = self.meta["description"]
        for key in ("document_title", "file_stem"):
            if self.meta.get(key):
                meta[key] = self.meta[key]
        meta["list_columns"] = [c.strip() for c in self.meta.get("list_columns", "").split(",")
                                if c.strip()]
        groups: dict[str, str] = {}
        for number, line in enumerate(self.groups.splitlines(), start=1):
            if not line.strip():
                continue
            match = _GROUP_LINE.match(line)
            if match is None:
                self.problems.append(f"groups: line {number} must read key = Title, as in "
                                     "terms = Terms.")
                continue
            groups[match.group(1)] = match.group(2)
        fields = {key: self._field(key, values) for key, values in self.fields.items()}
        parties = []
        for row in self.parties:
            party = {"role": row["role"], "label": row["label"], "name": row["name"]}
            if row.get("email"):
                party["email"] = row["email"]
            parties.append(party)
        return {"template": meta, "parties": parties, "groups": groups, "fields": fields}

    def _field(self, key: str, values: dict[str, str]) -> dict[str, Any]:
        kind = values.get("type", "")
        table: dict[str, Any] = {"label": values.get("label", "").strip() or key,
                                 "group": values.get("group", "").strip(), "type": kind}
        if values.get("help", "").strip():
            table["help"] = values["help"].strip()
        example = self._example(key, kind, values.get("example", ""))
        if example is not None:
            table["example"] = example
        for rule, input_kind in RULES:
            text = values.get(rule, "").strip()
            if not text:
                continue
            if input_kind == "flag":
                table[rule] = True
            elif input_kind == "whole":
                if not _INTEGER.match(text):
                    self.problems.append(f"field {key}: {rule} must be a whole number.")
                    continue
                table[rule] = int(text)
            elif input_kind == "number":
                try:
                    number = Decimal(text.replace(",", ""))
                except InvalidOperation:
                    number = Decimal("NaN")
                if not number.is_finite() or not text.isascii():
                    self.problems.append(f"field {key}: {rule} must be a number.")
                    continue
                table[rule] = int(number) if number == number.to_integral_value() \
                    else float(number)
            else:
                table[rule] = text
        return table

    def _example(self, key: str, kind: str, text: str) -> Any:
        if kind in LIST_TYPES:
            items = [line.strip() for line in text.splitlines() if line.strip()]
            return items or None
        text = text.strip()
        if not text:
            return None
        if kind == "boolean":
            if text not in ("true", "false"):
                self.problems.append(f"field {key}: the example of a yes-or-no field is yes "
                                     "or no.")
                return None
            return text == "true"
        if kind == "integer" and _INTEGER.match(text.replace(",", "")):
            return int(text.replace(",", ""))
        if kind not in FIELD_TYPES:
            return text
        return text
