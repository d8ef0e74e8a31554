"""The terms form, generated from a template's schema.

The form keeps exactly what was typed, as text, and hands it to the domain's
:func:`workflow.schema.validate_terms`, so the page checks the same rules as the command line
and the API. Each field knows its input (date, whole number, money, yes/no, a list of dates or
texts), its label, help and error, and the ids that tie them together for screen readers.

A list (of dates, or of texts) grows and shrinks without JavaScript: its "Add another" and
"Remove" buttons submit the form, which comes back with one more or one fewer box and nothing
lost.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from werkzeug.datastructures import MultiDict

from workflow.envelopes import (
    DEFAULT_LINK_DAYS,
    MAX_SIGNERS,
    SignerSpec,
    default_signers,
    parse_signers,
)
from workflow.errors import CounterpartError
from workflow.notices import DEFAULT_REMINDERS, ReminderSettings, parse_reminders
from workflow.schema import LIST_TYPES, Field, TemplateSpec

__all__ = ["TermInput", "TermsForm", "SendForm", "ADD_BUTTON", "REMOVE_BUTTON"]

ADD_BUTTON = "_add"
REMOVE_BUTTON = "_remove"
_DERIVE_NAMES = ("next_day", "add_months", "whole_years_between")


@dataclass
class TermInput:
    """One field of the terms form: what was typed and what is wrong with it."""

    field: Field
    value: Any  # a str; a list[str] for a list (of dates or of texts)
    error: str | None = None

    @property
    def key(self) -> str:
        return self.field.key

    @property
    def id(self) -> str:
        """The id of the input (of the first box, for a list; of "Yes", for yes/no)."""
        if self.field.type in LIST_TYPES:
            return f"term-{self.key}-1"
        if self.field.type == "boolean":
            return f"term-{self.key}-yes"
        return f"term-{self.key}"

    @property
    def help_id(self) -> str:
        return f"term-{self.key}-help"

    @property
    def error_id(self) -> str:
        return f"term-{self.key}-error"

    @property
    def describedby(self) -> str:
        ids = [self.help_id] if self.field.help or self.field.derive else []
        if self.error:
            ids.append(self.error_id)
        return " ".join(ids)

    @property
    def message(self) -> str | None:
        """The error as a sentence that names the field."""
        if not self.error:
            return None
        joiner = ": " if self.field.type in LIST_TYPES else " "
        return f"{self.field.label}{joiner}{self.error}"

    @property
    def derive_name(self) -> str | None:
        """The derivation computing this field when left empty, e.g. ``next_day``."""
        if not self.field.derive:
            return None
        name = self.field.derive.split("(", 1)[0].strip()
        return name if name in _DERIVE_NAMES else None

    @property
    def boxes(self) -> list[str]:
        """The boxes a list shows: what was typed, or one empty box."""
        return list(self.value) or [""]

    @property
    def item_noun(self) -> str:
        """What one box of a list holds: "Date", or "Item" for a list of texts."""
        return "Date" if self.field.type == "date_list" else "Item"

    @property
    def can_add(self) -> bool:
        return len(self.boxes) < self.field.max_items


@dataclass
class TermsForm:
    """A letter's terms as typed into the form, and the errors the domain found in them."""

    spec: TemplateSpec
    values: dict[str, Any]
    errors: dict[str, str] = field(default_factory=dict)
    # "save" when the form was submitted to be saved; "add" or "remove" for a list's buttons.
    action: str = "save"
    focus: str | None = None

    @classmethod
    def blank(cls, spec: TemplateSpec) -> TermsForm:
        """An empty form."""
        return cls(spec, {f.key: [] if f.type in LIST_TYPES else ""
                          for f in spec.fields.values()})

    @classmethod
    def from_terms(cls, spec: TemplateSpec, terms: Mapping[str, Any]) -> TermsForm:
        """A form filled with stored terms (JSON values: ISO dates, numbers, booleans)."""
        form = cls.blank(spec)
        for f in spec.fields.values():
            value = terms.get(f.key)
            if value is None:
                continue
            if f.type in LIST_TYPES:
                form.values[f.key] = [str(v) for v in value] if isinstance(value, list) else []
            elif f.type == "boolean":
                form.values[f.key] = "true" if value is True else "false" if value is False else ""
            else:
                form.values[f.key] = str(value)
        return form

    @classmethod
    def from_request(cls, spec: TemplateSpec, data: MultiDict[str, str]) -> TermsForm:
        """A form holding what was posted, with a list's add or remove button applied."""
        form = cls.blank(spec)
        for f in spec.fields.values():
            if f.type in LIST_TYPES:
                form.values[f.key] = [v.strip() for v in data.getlist(f.key)][:f.max_items]
            elif f.type == "boolean":
                value = data.get(f.key, "").strip()
                form.values[f.key] = value if value in ("true", "false") else ""
            elif f.type == "text":
                form.values[f.key] = data.get(f.key, "")
            else:
                form.values[f.key] = data.get(f.key, "").strip()
        if data.get(ADD_BUTTON):
            form._add_box(data[ADD_BUTTON])
        elif data.get(REMOVE_BUTTON):
            form._remove_box(data[REMOVE_BUTTON])
        return form

    def _list_field(self, key: str) -> Field | None:
        f = self.spec.fields.get(key)
        return f if f is not None and f.type in LIST_TYPES else None

    def _add_box(self, key: str) -> None:
        f = self._list_field(key)
        if f is None:
            return
        self.action = "add"
        boxes = self.values[key] or [""]  # the page showed one box even for an empty list
        if len(boxes) < f.max_items:
            boxes = [*boxes, ""]
        self.values[key] = boxes
        self.focus = f"term-{key}-{len(boxes)}"

    def _remove_box(self, target: str) -> None:
        key, _, index = target.rpartition(":")
        f = self._list_field(key)
        if f is None or not _SMALL_NUMBER.fullmatch(index):
            return
        self.action = "remove"
        typed = self.values[key]
        position = int(index) - 1
        if 0 <= position < len(typed):
            del typed[position]
        self.focus = f"term-{key}-{max(1, min(position + 1, len(typed)))}"

    def raw_terms(self) -> dict[str, Any]:
        """The terms to validate: typed text, with empty boxes left out."""
        raw: dict[str, Any] = {}
        for f in self.spec.fields.values():
            value = self.values.get(f.key)
            if f.type in LIST_TYPES:
                raw[f.key] = [v for v in value or [] if v]
            elif f.type == "text":
                raw[f.key] = value or ""
            elif value:
                raw[f.key] = value
        return raw

    def sections(self) -> list[tuple[str, str, list[TermInput]]]:
        """The form's sections in schema order: (group key, title, inputs)."""
        out = []
        for group, title in self.spec.groups.items():
            inputs = [TermInput(f, self.values.get(f.key, ""), self.errors.get(f.key))
                      for f in self.spec.fields_in_group(group)]
            if inputs:
                out.append((group, title, inputs))
        return out

    def error_list(self) -> list[tuple[str | None, str]]:
        """Every error as (id of the input to jump to, sentence), in the form's order."""
        listed: list[tuple[str | None, str]] = []
        for _, _, inputs in self.sections():
            listed.extend((i.id, i.message) for i in inputs if i.message)
        for key, message in self.errors.items():
            if key not in self.spec.fields:
                listed.append((None, f"{key}: {message}"))
        return listed


# ASCII digits only: str.isdigit() also says yes to "²", which int() then refuses.
_SMALL_NUMBER = re.compile(r"[0-9]{1,4}")
_SIGNER_FIELD = re.compile(r"^signers\[(\d+)\]\.(role|name|email|verify_email)(:?) (.*)$",
                           re.DOTALL)


@dataclass
class SendForm:
    """The "Send for signature" form: each signer's role, name and email, the signing order,
    how long the links last and the reminders (how many, the first after how many days, then
    every how many days). Rows are posted as ``signers-<i>-role`` and so on; the roles
    offered are the template's parties, as ``(role, label)``.

    Errors from the domain name their field (``signers[1].email: ...``); :meth:`fail` puts
    each beside its input, keyed ``signers-1-email``.
    """

    signers: list[dict[str, str]]
    signing_order: bool = False
    link_days: str = str(DEFAULT_LINK_DAYS)
    reminder_count: str = str(DEFAULT_REMINDERS.count)
    reminder_first_after_days: str = str(DEFAULT_REMINDERS.first_after_days)
    reminder_every_days: str = str(DEFAULT_REMINDERS.every_days)
    errors: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    roles: tuple[tuple[str, str], ...] = ()

    @staticmethod
    def party_roles(spec: TemplateSpec) -> tuple[tuple[str, str], ...]:
        """The roles a signer may have: the template's parties, as (role, label)."""
        return tuple((p.role, p.label) for p in spec.parties)

    @classmethod
    def defaults(cls, spec: TemplateSpec, terms: Mapping[str, Any]) -> SendForm:
        """The form filled with the template's parties, in signing order: each name (and
        email, when the schema names a term for it) from the letter's terms."""
        chosen: list[SignerSpec] = default_signers(spec, terms)
        return cls([{"role": s.role, "name": s.name, "email": s.email or ""} for s in chosen],
                   roles=cls.party_roles(spec))

    @classmethod
    def from_request(cls, form: Mapping[str, str],
                     spec: TemplateSpec | None = None) -> SendForm:
        """The form as posted, kept as typed (``spec`` gives the roles to offer again)."""
        signers = []
        for index in range(MAX_SIGNERS):
            prefix = f"signers-{index}-"
            if prefix + "name" not in form:
                break
            signers.append({key: form.get(prefix + key, "").strip()
                            for key in ("role", "name", "email", "verify_email")})
        defaults = DEFAULT_REMINDERS
        return cls(signers, signing_order=form.get("signing_order") == "yes",
                   link_days=form.get("link_days", "").strip(),
                   reminder_count=form.get("reminder_count", str(defaults.count)).strip(),
                   reminder_first_after_days=form.get(
                       "reminder_first_after_days", str(defaults.first_after_days)).strip(),
                   reminder_every_days=form.get(
                       "reminder_every_days", str(defaults.every_days)).strip(),
                   roles=cls.party_roles(spec) if spec is not None else ())

    def signer_specs(self) -> list[SignerSpec]:
        """Check the signers with the domain's rules (raises CounterpartError)."""
        return parse_signers([{**s, "verify_email": s.get("verify_email") == "yes"}
                              for s in self.signers])

    def link_days_value(self) -> int:
        """The links' lifetime in days (raises CounterpartError naming link_days)."""
        if not _SMALL_NUMBER.fullmatch(self.link_days):
            raise CounterpartError("link_days: the links last a whole number of days, from 1 "
                                   "to 365.")
        return int(self.link_days)

    def reminders_value(self) -> ReminderSettings:
        """The reminders asked for (raises CounterpartError naming ``reminders``)."""
        values = {}
        for key, typed in (("count", self.reminder_count),
                           ("first_after_days", self.reminder_first_after_days),
                           ("every_days", self.reminder_every_days)):
            if not _SMALL_NUMBER.fullmatch(typed):
                raise CounterpartError(f"reminders.{key}: give a whole number "
                                       f"({typed[:20]!r} is not one).")
            values[key] = int(typed)
        return parse_reminders(values)

    def fail(self, error: CounterpartError) -> None:
        """Put a domain error beside the input it names, or above the form."""
        message = str(error)
        match = _SIGNER_FIELD.match(message)
        if match:
            index, name, colon, text = match.groups()
            # "signers[0].name: 'X' does not appear..." or "signers[0].name is required."
            self.errors[f"signers-{index}-{name}"] = (text[:1].upper() + text[1:] if colon
                                                     else f"The {name} {text}")
        elif message.startswith("link_days: "):
            self.errors["link_days"] = message.removeprefix("link_days: ")
        elif message.startswith("reminders"):
            words = {"reminders.count": "How many", "reminders": "How many",
                     "reminders.first_after_days": "The days before the first",
                     "reminders.every_days": "The days between reminders"}
            key, _, text = message.partition(": ")
            self.errors["reminders"] = f"{words.get(key, key)}: {text}"
        else:
            self.error = message

