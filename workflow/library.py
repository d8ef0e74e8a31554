"""The template library: agreement templates kept in the database, each with its versions.

Each version holds a .docx (a stored blob) and the TOML schema of its terms. A version is a
draft until an administrator publishes it; only published versions make letters, and a letter
version names the template version it was made from, so a later version changes nothing
already drafted. The templates shipped in the template folder (``templates/``) are loaded as
built-ins, published, when the app or ``counterpart migrate`` starts; a changed file there
becomes the next version.

An uploaded .docx is untrusted. It is checked as every template is (a zip or XML bomb, a DTD
or an entity is refused before anything parses it), then read for the Jinja it holds: every
variable in the body, headers, footers, footnotes and document properties, the loops and
conditions around them, the functions and filters it calls, and its signing fields
(``sign_here('ROLE')``). From that a draft schema is inferred (see :func:`infer_schema`), and
a template whose Jinja does not parse, that calls an unknown function or filter, whose
variables and schema differ, or whose parties lack a signature field, is refused with every
problem named at once (:class:`workflow.errors.TemplateProblems`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import logging
import re
import unicodedata
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any

import jinja2
from anyascii import anyascii
from docxtpl import DocxTemplate
from jinja2 import meta, nodes
from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from . import render
from .errors import NotFoundError, StateError, TemplateError, TemplateProblems, TermsError
from .formatting import FILTERS
from .models import LetterVersion, Template, TemplateVersion, User, utcnow
from .schema import (
    DEFAULT_TEMPLATE_DIR,
    TemplateSpec,
    list_templates,
    parse_schema,
    pattern_terms,
    sample_terms,
    schema_toml,
    spec_to_raw,
    validate_terms,
)
from .template_check import check_template_bytes

__all__ = [
    "DRAFT", "PUBLISHED", "VariableUse", "TemplateUse", "inspect_docx", "guess_type",
    "infer_schema", "template_problems", "key_from_filename", "sync_builtin_templates",
    "add_template", "update_draft", "new_draft", "publish_template", "get_template_version",
    "published_version", "template_spec", "template_docx", "library_templates",
    "published_specs", "render_examples", "keep_test_render", "letter_template_version",
    "TemplateSummary",
]

log = logging.getLogger(__name__)

DRAFT = "draft"
PUBLISHED = "published"
_KEY_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_FOOTNOTES = "application/vnd.openxmlformats-officedocument.wordprocessingml.footnotes+xml"
_PROPERTY_PARTS = (("the document properties", "docProps/core.xml"),
                   ("the custom document properties", "docProps/custom.xml"))
PARTIES_GROUP = "parties"
TERMS_GROUP = "terms"


# --- reading a template's Jinja -------------------------------------------------------------

@dataclass
class VariableUse:
    """How a template uses one of its variables."""

    name: str
    parts: list[str] = field(default_factory=list)
    """Where it is used: "the body", "header 1", "the footnotes", ..."""
    iterated: bool = False
    """Looped over by ``{% for ... in NAME %}``."""
    condition_only: bool = True
    """Every use is the condition of an ``{% if %}`` (alone, or with ``not``/``and``/``or``)."""


@dataclass
class TemplateUse:
    """What a template's Jinja holds: its variables, signing fields and problems."""

    variables: dict[str, VariableUse] = field(default_factory=dict)
    signature_roles: list[str] = field(default_factory=list)
    """The roles of its ``sign_here('ROLE')`` fields, in order of first appearance."""
    problems: list[str] = field(default_factory=list)
    parsed: bool = True
    """False when a part did not parse: its variables are then known only roughly."""
    unparsed_names: set[str] = field(default_factory=set)
    """Every name inside the tags of the parts that did not parse (they may be variables)."""


def _strip_tags(text: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", "", text).split())


def _patch(template: DocxTemplate, xml: str) -> str:
    # As docxtpl renders a part: its clean-up, then a line per paragraph.
    return re.sub(r"<w:p([ >])", r"\n<w:p\1", template.patch_xml(xml))


def _docx_parts(docx: bytes) -> list[tuple[str, str]]:
    """Return (where, Jinja source) for every part of a .docx that can hold a variable."""
    template = DocxTemplate(io.BytesIO(docx))
    template.init_docx()
    parts = [("the body", _patch(template, template.get_xml()))]
    for noun, uri in (("header", template.HEADER_URI), ("footer", template.FOOTER_URI)):
        found = sorted(template.get_headers_footers(uri), key=lambda item: item[1].partname)
        for index, (_key, part) in enumerate(found, start=1):
            parts.append((f"{noun} {index}", _patch(template, template.get_part_xml(part))))
    for part in template.docx.part.package.parts:
        if part.content_type == _FOOTNOTES:
            blob = part.blob.decode("utf-8") if isinstance(part.blob, bytes) else part.blob
            parts.append(("the footnotes", _patch(template, blob)))
    with zipfile.ZipFile(io.BytesIO(docx)) as archive:
        names = set(archive.namelist())
        for where, name in _PROPERTY_PARTS:
            if name in names:
                xml = archive.read(name).decode("utf-8", errors="replace")
                parts.append((where, template.patch_xml(xml)))
    return parts


def _any_value(*_args: Any) -> bool:
    """Stand in, while a template is read, for a filter or test it names that does not exist."""
    return False


def _condition_names(test: nodes.Node) -> Iterable[nodes.Name]:
    """The names a condition tests for truth: alone, negated, or joined by and/or."""
    if isinstance(test, nodes.Name):
        yield test
    elif isinstance(test, nodes.Not):
        yield from _condition_names(test.node)
    elif isinstance(test, nodes.And | nodes.Or):
        yield from _condition_names(test.left)
        yield from _condition_names(test.right)


def _syntax_problem(where: str, source: str, exc: jinja2.TemplateSyntaxError) -> str:
    lines = source.splitlines()
    line = lines[exc.lineno - 1] if exc.lineno and 0 < exc.lineno <= len(lines) else ""
    text = _strip_tags(line)
    start = max(text.find("{"), 0)
    near = text[start:start + 60]
    return (f"{where}: a tag does not parse ({exc.message})"
            + (f", near “{near}”." if near else "."))


def inspect_docx(docx: bytes, filename: str) -> TemplateUse:
    """Read the Jinja of a .docx: its variables, signing fields, and what is wrong with it.

    Raises TemplateError for a file that is not a safe, readable .docx (checked before it is
    parsed, as every template is).
    """
    check_template_bytes(docx, filename)
    try:
        parts = _docx_parts(docx)
    except Exception as exc:  # python-docx and lxml raise many kinds on a damaged file
        raise TemplateError(f"{filename}: not a Word document that can be read ({exc}).") from exc
    env = render.jinja_environment()
    use = TemplateUse()
    condition_ids: set[int] = set()
    for where, source in parts:
        # Read with a plain environment of the same filters, tests and functions: nothing is
        # rendered here, and a filter that does not exist must not stop the reading.
        reader = jinja2.Environment(autoescape=True)
        reader.filters = dict(env.filters)
        reader.tests = dict(env.tests)
        reader.globals = dict(env.globals)
        try:
            tree = reader.parse(source)
        except jinja2.TemplateSyntaxError as exc:
            use.problems.append(_syntax_problem(where, source, exc))
            _read_roughly(use, source)
            continue
        except RecursionError:
            use.problems.append(f"{where}: a tag is nested too deeply to be read.")
            _read_roughly(use, source)
            continue
        for used_filter in tree.find_all(nodes.Filter):
            if used_filter.name not in env.filters:
                use.problems.append(f"{where}: uses the filter “{used_filter.name}”, which "
                                    f"does not exist; the letter filters are "
                                    f"{', '.join(FILTERS)}, besides Jinja's own.")
                reader.filters[used_filter.name] = _any_value
        for used_test in tree.find_all(nodes.Test):
            if used_test.name not in env.tests:
                use.problems.append(f"{where}: uses the test “is {used_test.name}”, which "
                                    "does not exist.")
                reader.tests[used_test.name] = _any_value
        try:
            undeclared = meta.find_undeclared_variables(tree)
        except (jinja2.TemplateError, RecursionError) as exc:
            use.problems.append(f"{where}: the tags cannot be read ({exc}).")
            _read_roughly(use, source)
            continue
        called: set[str] = set()
        for call in tree.find_all(nodes.Call):
            if not isinstance(call.node, nodes.Name):
                continue
            name = call.node.name
            if name in render.SIGNING_FUNCTIONS:
                first = call.args[0] if call.args else None
                if (name == "sign_here" and isinstance(first, nodes.Const)
                        and isinstance(first.value, str)
                        and first.value not in use.signature_roles):
                    use.signature_roles.append(first.value)
            elif name not in env.globals and name in undeclared:
                called.add(name)
                use.problems.append(f"{where}: calls {name}(), which is not a function "
                                    "templates may use.")
        names = [n for n in undeclared if n not in env.globals and n not in called]
        for loop in tree.find_all(nodes.For):
            target: nodes.Node | None = loop.iter
            while isinstance(target, nodes.Filter):
                target = target.node
            if isinstance(target, nodes.Name) and target.name in names:
                _variable(use, target.name, where).iterated = True
        for branch in tree.find_all((nodes.If, nodes.CondExpr)):
            test = getattr(branch, "test", None)
            if test is not None:
                condition_ids.update(id(n) for n in _condition_names(test))
        for name_node in tree.find_all(nodes.Name):
            if name_node.ctx == "load" and name_node.name in names:
                variable = _variable(use, name_node.name, where)
                if id(name_node) not in condition_ids:
                    variable.condition_only = False
    use.problems = list(dict.fromkeys(use.problems))
    return use


_TAG = re.compile(r"\{[{%]([^{}]*)")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ROLE_CALL = re.compile(r"""sign_here\(\s*['"]([a-z][a-z0-9_]*)['"]\s*\)""")


def _read_roughly(use: TemplateUse, source: str) -> None:
    """Note what a part that does not parse may use: every name inside its tags, and the
    roles its ``sign_here`` calls name, so that its other problems can still be listed."""
    use.parsed = False
    for tag in _TAG.findall(_strip_tags(source)):
        use.unparsed_names.update(_NAME.findall(tag))
        for role in _ROLE_CALL.findall(tag):
            if role not in use.signature_roles:
                use.signature_roles.append(role)


def _variable(use: TemplateUse, name: str, where: str) -> VariableUse:
    variable = use.variables.setdefault(name, VariableUse(name))
    if where not in variable.parts:
        variable.parts.append(where)
    return variable


_INTEGER_SUFFIXES = ("_count", "_shares", "_days", "_months", "_years", "_hours")
_MONEY_SUFFIXES = ("_rate", "_amount", "_price", "_fee")


def guess_type(use: VariableUse) -> str:
    """Guess a variable's field type from its name and use, as docassemble's weaver does.

    ``*_date`` a date; ``*_rate``, ``*_amount``, ``*_price``, ``*_fee`` money (decimal);
    ``*_count``, ``*_shares``, ``*_days``, ``*_months``, ``*_years``, ``*_hours`` and
    ``number_of_*`` whole numbers; ``is_*``, ``has_*`` or a name used only as an ``{% if %}``
    condition yes/no; a name looped over a list (of dates when it ends in ``_dates``, else of
    texts); anything else text.
    """
    name = use.name
    if use.iterated:
        return "date_list" if name.endswith("_dates") else "text_list"
    if name.endswith("_date"):
        return "date"
    if name.endswith(_MONEY_SUFFIXES):
        return "decimal"
    if name.endswith(_INTEGER_SUFFIXES) or name.startswith("number_of_"):
        return "integer"
    if name.startswith(("is_", "has_")) or use.condition_only:
        return "boolean"
    return "text"


# --- inferring a schema ---------------------------------------------------------------------

def _label(name: str) -> str:
    words = name.replace("_", " ").strip()
    return words[:1].upper() + words[1:]


def _example(kind: str, label: str) -> Any:
    today = dt.date.today().isoformat()
    return {"date": today, "integer": 1, "decimal": "100", "boolean": True,
            "date_list": [today], "text_list": [f"{label} 1", f"{label} 2"]}.get(kind, label)


def _field_table(use: VariableUse, group: str) -> dict[str, Any]:
    kind = guess_type(use)
    label = _label(use.name)
    table: dict[str, Any] = {"label": label, "group": group, "type": kind,
                             "help": f"Used in {', '.join(use.parts)}.",
                             "example": _example(kind, label)}
    if kind == "decimal":
        table.update(min=0, decimal_places=2)
    elif kind == "integer":
        table["min"] = 0
    return table


def _name_term(role: str, types: Mapping[str, str]) -> str | None:
    """The text variable that most likely prints a party's name under its signature line."""
    for candidate in (f"{role}_name", f"{role}_full_name", f"{role}_signatory_name",
                      f"{role}_signer_name", f"{role}_signatory", role):
        if types.get(candidate) == "text":
            return candidate
    others = sorted(n for n, t in types.items()
                    if t == "text" and n.startswith(f"{role}_") and n.endswith("_name"))
    return others[0] if others else None


def infer_schema(use: TemplateUse, key: str, title: str,
                 previous: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], list[str]]:
    """Make a draft schema (the tables of its TOML) for the variables a template uses.

    Types are guessed by :func:`guess_type`, and the parties come from the template's
    ``sign_here`` roles, each named by a text variable such as ``ROLE_name``. ``previous`` is
    the schema of the template's earlier version: what it says of a variable still used (its
    label, help, type, rules, example), of a party still signing, and of the title, file
    name and listed terms, is kept. Returns the tables and the problems found (a party whose
    name the template never prints).
    """
    previous = dict(previous or {})
    old_fields: dict[str, Any] = dict(previous.get("fields") or {})
    old_meta: dict[str, Any] = dict(previous.get("template") or {})
    types: dict[str, str] = {
        name: str(old_fields[name].get("type")) if isinstance(old_fields.get(name), dict)
        else guess_type(variable) for name, variable in use.variables.items()}
    problems: list[str] = []
    parties: list[dict[str, Any]] = []
    old_parties = {p.get("role"): p for p in previous.get("parties") or []
                   if isinstance(p, dict)}
    for role in use.signature_roles:
        old = old_parties.get(role)
        if old and types.get(str(old.get("name"))) == "text":
            party = {k: v for k, v in old.items()
                     if k != "email" or types.get(str(v)) == "text"}
            parties.append(party)
            continue
        name_term = _name_term(role, types)
        if name_term is None:
            problems.append(f"party “{role}” (sign_here('{role}')) needs its name printed "
                            f"under its signature line: put {{{{ {role}_name }}}} there.")
            continue
        party = {"role": role, "label": _label(role), "name": name_term}
        if types.get(f"{role}_email") == "text":
            party["email"] = f"{role}_email"
        parties.append(party)
    party_terms = {p["name"] for p in parties} | {p["email"] for p in parties if "email" in p}
    groups: dict[str, str] = {}
    old_groups = dict(previous.get("groups") or {})
    fields: dict[str, Any] = {}
    for name, variable in use.variables.items():
        if name in old_fields and isinstance(old_fields[name], dict):
            table = dict(old_fields[name])
            for rule in ("at_most", "before", "after", "on_or_after"):
                if table.get(rule) not in use.variables:
                    table.pop(rule, None)
            derive = table.get("derive")
            if isinstance(derive, str):
                inside = derive.partition("(")[2].rpartition(")")[0]
                if any(a.strip() not in use.variables for a in inside.split(",") if a.strip()):
                    table.pop("derive", None)
            group = str(table.get("group"))
            if group in old_groups:
                groups[group] = old_groups[group]
            else:
                table["group"] = PARTIES_GROUP if name in party_terms else TERMS_GROUP
        else:
            table = _field_table(variable, PARTIES_GROUP if name in party_terms else TERMS_GROUP)
        fields[name] = table
    used_groups = {f["group"] for f in fields.values()}
    groups = {**({PARTIES_GROUP: "Parties"} if PARTIES_GROUP in used_groups else {}),
              **({TERMS_GROUP: "Terms"} if TERMS_GROUP in used_groups else {}), **groups}
    title = str(old_meta.get("title") or title)
    names = [p["name"] for p in parties]
    text_fields = [n for n, t in types.items() if t == "text"]
    document_title = old_meta.get("document_title")
    if not isinstance(document_title, str) or any(
            t not in fields for t in pattern_terms(document_title)):
        shown = names or text_fields[:1]
        document_title = f"{title}: " + " and ".join(f"{{{n}}}" for n in shown) \
            if shown else title
    file_stem = old_meta.get("file_stem")
    if not isinstance(file_stem, str) or any(t not in fields for t in pattern_terms(file_stem)):
        first = (names or text_fields)[:1]
        file_stem = " ".join([*(f"{{{n}}}" for n in first), key.replace("_", " ")])
    columns = [c for c in old_meta.get("list_columns") or [] if c in fields]
    if not columns:
        columns = (names or text_fields)[:3]
    meta_table: dict[str, Any] = {"title": title}
    if old_meta.get("description"):
        meta_table["description"] = old_meta["description"]
    meta_table.update(document_title=document_title, file_stem=file_stem, list_columns=columns)
    return {"template": meta_table, "parties": parties, "groups": groups,
            "fields": fields}, problems


def template_problems(use: TemplateUse, spec: TemplateSpec, docx: bytes) -> list[str]:
    """List everything that keeps a template and its schema from working together.

    The Jinja's own problems; each variable the schema lacks and each field the template
    never uses (a field used only by the document title, the file name or as a party's email
    counts as used); and the signing fields (:func:`workflow.render.check_signing_fields`):
    a party without ``sign_here``, or a role the schema does not declare. When a part does
    not parse, the rest is still checked as far as it can be read.
    """
    problems = list(use.problems)
    for name, variable in use.variables.items():
        if name not in spec.fields:
            problems.append(f"{' and '.join(variable.parts)}: uses “{name}”, which the schema "
                            f"has no field for.")
    used = set(use.variables) | use.unparsed_names
    used |= {p.email_term for p in spec.parties if p.email_term}
    used |= set(pattern_terms(spec.document_title)) | set(pattern_terms(spec.file_stem))
    for key in spec.fields:
        if key not in used:
            problems.append(f"the schema's field “{key}” is never used by the template.")
    if use.parsed:
        problems += render.check_signing_fields(spec, docx)
    else:  # the signing fields' own check needs every part parsed: check what was read
        for party in spec.parties:
            if party.role not in use.signature_roles:
                problems.append(f"{party.label} ({party.role}) has no signature field; put "
                                f"{{{{ sign_here('{party.role}') }}}} where they sign, above "
                                "their printed name.")
        for role in use.signature_roles:
            if role not in spec.signers:
                problems.append(f"sign_here('{role}') names a role the schema does not "
                                f"declare (its parties: {', '.join(spec.signers) or 'none'}).")
    return list(dict.fromkeys(problems))


def key_from_filename(filename: str) -> str:
    """Make a template key from a file name: "Mutual NDA (v2).docx" gives "mutual_nda_v2"."""
    stem = PurePosixPath(str(filename).replace("\\", "/")).name
    stem = stem[:-5] if stem.lower().endswith(".docx") else stem
    key = re.sub(r"[^a-z0-9]+", "_", anyascii(unicodedata.normalize("NFC", stem)).lower())
    key = key.strip("_")[:64].strip("_")
    if key and not key[0].isalpha():
        key = f"template_{key}"[:64].strip("_")
    return key or "template"


def _title_from(filename: str) -> str:
    stem = PurePosixPath(str(filename).replace("\\", "/")).name
    stem = stem[:-5] if stem.lower().endswith(".docx") else stem
    text = " ".join(re.sub(r"[_\s]+", " ", stem).split())
    text = "".join(c for c in text if unicodedata.category(c)[0] != "C")
    return (text[:1].upper() + text[1:])[:120] or "Template"


def _clean_filename(filename: str) -> str:
    name = PurePosixPath(str(filename).replace("\\", "/")).name
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C").strip()
    return name[:200] or "template.docx"


# --- storage --------------------------------------------------------------------------------

def _store_blob(session: Session, data: bytes) -> str:
    from .letters import store_blob

    return store_blob(session, data)


def _blob(session: Session, sha256: str) -> bytes:
    from .letters import blob_bytes

    return blob_bytes(session, sha256)


def _locked_template(session: Session, key: str, *, builtin: bool = False,
                     user: User | None = None) -> Template:
    """Return a template's row, made if new, locked so that version numbers are taken once."""
    dialect = session.get_bind().dialect.name
    insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
    session.execute(insert(Template).values(
        key=key, builtin=builtin, created_at=utcnow(),
        created_by_id=user.id if user else None).on_conflict_do_nothing(index_elements=["key"]))
    template = session.scalar(select(Template).where(Template.key == key).with_for_update())
    assert template is not None
    return template


def _next_number(session: Session, template: Template) -> int:
    return (session.scalar(select(func.max(TemplateVersion.number))
                           .where(TemplateVersion.template_id == template.id)) or 0) + 1


@lru_cache(maxsize=256)
def _spec_of(key: str, schema: str, filename: str) -> TemplateSpec:
    return parse_schema(key, schema, docx_path=Path(filename))


def template_spec(version: TemplateVersion) -> TemplateSpec:
    """Return the schema of a template version (parsed once per distinct text)."""
    return _spec_of(version.template.key, version.schema_toml, f"{version.template.key}.docx")


def template_docx(session: Session, version: TemplateVersion) -> bytes:
    """Return the .docx bytes of a template version."""
    return _blob(session, version.docx_sha256)


def sync_builtin_templates(session: Session, template_dir: Path = DEFAULT_TEMPLATE_DIR, *,
                           only: str | None = None) -> list[TemplateVersion]:
    """Load the template folder's templates into the library, published; return new versions.

    A template already loaded with the same .docx and schema adds nothing; a changed file
    becomes the next version. A template whose schema does not load is left out and logged.
    Letter versions made from a built-in file before the library existed get the template
    version with the same .docx.
    """
    added = []
    for name in list_templates(template_dir):
        if only is not None and name != only:
            continue
        docx_path = Path(template_dir) / f"{name}.docx"
        try:
            docx = docx_path.read_bytes()
            schema = (Path(template_dir) / f"{name}.toml").read_text(encoding="utf-8")
            check_template_bytes(docx, docx_path.name)
            parse_schema(name, schema)
        except (OSError, UnicodeDecodeError, TemplateError) as exc:
            log.error("The built-in template %s was not loaded: %s", name, exc)
            continue
        template = _locked_template(session, name, builtin=True)
        sha = hashlib.sha256(docx).hexdigest()
        newest = session.scalar(select(TemplateVersion).where(
            TemplateVersion.template_id == template.id, TemplateVersion.origin == "builtin")
            .order_by(TemplateVersion.number.desc()).limit(1))
        if newest is None or newest.docx_sha256 != sha or newest.schema_toml != schema:
            now = utcnow()
            newest = TemplateVersion(
                template_id=template.id, number=_next_number(session, template),
                status=PUBLISHED, docx_sha256=_store_blob(session, docx), schema_toml=schema,
                filename=docx_path.name, origin="builtin", created_at=now, published_at=now)
            session.add(newest)
            session.flush()
            added.append(newest)
        session.execute(update(LetterVersion).where(
            LetterVersion.template_name == name, LetterVersion.template_version_id.is_(None),
            LetterVersion.template_sha256 == sha).values(template_version_id=newest.id))
    return added


def _raw_of(version: TemplateVersion | None) -> dict[str, Any] | None:
    if version is None:
        return None
    try:
        return spec_to_raw(template_spec(version))
    except TemplateError:
        return None


def add_template(session: Session, docx: bytes, filename: str, user: User | None, *,
                 key: str | None = None, schema: str | None = None) -> TemplateVersion:
    """Add an uploaded .docx as the next version (a draft) of the template ``key``.

    ``key`` defaults to one made from the file name. Without ``schema`` (TOML text), a draft
    schema is inferred from the template (keeping what the previous version's schema says of
    the variables it still uses). Raises TemplateProblems listing every problem; nothing is
    stored then.
    """
    key = (key or "").strip() or key_from_filename(filename)
    if not _KEY_RE.match(key):
        raise TemplateProblems([f"key: “{key[:64]}” must be lower_snake_case: a letter, then "
                                "letters, digits or underscores (64 at most)."])
    filename = _clean_filename(filename)
    try:
        use = inspect_docx(docx, filename)
    except TemplateError as exc:
        raise TemplateProblems([str(exc)]) from exc
    existing = session.scalar(select(Template).where(Template.key == key))
    previous = None if existing is None else session.scalar(
        select(TemplateVersion).where(TemplateVersion.template_id == existing.id)
        .order_by(TemplateVersion.number.desc()).limit(1))
    problems: list[str] = []
    if schema is None:
        raw, problems = infer_schema(use, key, _title_from(filename), _raw_of(previous))
        schema = schema_toml(raw)
    try:
        spec = parse_schema(key, schema, docx_path=Path(f"{key}.docx"))
    except TemplateProblems as exc:
        raise TemplateProblems([*use.problems, *problems, *exc.problems]) from exc
    unnamed = [role for role in use.signature_roles if role not in spec.signers]
    problems = [*problems, *(p for p in template_problems(use, spec, docx)
                             # a party inference could not name is said so once, above
                             if not (problems and any(f"sign_here('{role}') names a role" in p
                                                      for role in unnamed)))]
    if problems:
        raise TemplateProblems(list(dict.fromkeys(problems)))
    template = _locked_template(session, key, user=user)
    version = TemplateVersion(
        template_id=template.id, number=_next_number(session, template), status=DRAFT,
        docx_sha256=_store_blob(session, docx), schema_toml=schema, filename=filename,
        origin="upload", created_by_id=user.id if user else None, created_at=utcnow())
    session.add(version)
    session.flush()
    return version


def get_template_version(session: Session, key: str, number: int | None = None, *,
                         for_update: bool = False) -> TemplateVersion:
    """Return a version of a template (its newest by default), or raise NotFoundError."""
    if not _KEY_RE.match(key or ""):
        raise NotFoundError(f"There is no template named {str(key)[:64]!r}.")
    query = select(TemplateVersion).join(Template).where(Template.key == key)
    query = query.where(TemplateVersion.number == number) if number is not None \
        else query.order_by(TemplateVersion.number.desc()).limit(1)
    if for_update:
        query = query.with_for_update()
    version = session.scalar(query)
    if version is None:
        if number is not None and session.scalar(select(Template.id).where(Template.key == key)):
            raise NotFoundError(f"The template {key!r} has no version {number}.")
        raise NotFoundError(f"There is no template named {key!r}.")
    return version


def published_version(session: Session, key: str, *,
                      template_dir: Path = DEFAULT_TEMPLATE_DIR) -> TemplateVersion:
    """Return the newest published version of a template, the one new letters are made from.

    A built-in template not yet in the library is loaded first. Raises NotFoundError for an
    unknown template and StateError (code ``template_not_published``) for one with drafts
    only.
    """
    if not _KEY_RE.match(key or ""):
        raise NotFoundError(f"There is no template named {str(key)[:64]!r}.")
    if session.scalar(select(Template.id).where(Template.key == key)) is None:
        sync_builtin_templates(session, template_dir, only=key)
    version = session.scalar(
        select(TemplateVersion).join(Template)
        .where(Template.key == key, TemplateVersion.status == PUBLISHED)
        .order_by(TemplateVersion.number.desc()).limit(1))
    if version is None:
        get_template_version(session, key)  # raises NotFoundError for an unknown key
        error = StateError(f"The template {key!r} is a draft: an administrator publishes it "
                           "before letters can be made from it.")
        error.code = "template_not_published"
        raise error
    return version


def _check_examples(spec: TemplateSpec, docx: bytes) -> bytes:
    """Render a template with its example terms; raise TemplateProblems naming each bad one."""
    try:
        terms = validate_terms(spec, sample_terms(spec))
    except TermsError as exc:
        raise TemplateProblems([f"the example of “{key}” {message}." if key in spec.fields
                                else f"{key}: {message}." for key, message in exc.errors.items()]
                               ) from exc
    try:
        return render.render_docx(spec, terms, template=docx)
    except TemplateError as exc:
        raise TemplateProblems([f"the test render with the example terms failed: {exc}"]
                               ) from exc


def update_draft(session: Session, key: str, number: int, schema: str) -> TemplateVersion:
    """Replace a draft version's schema (TOML text); refused for a published version.

    Raises TemplateProblems listing every problem of the schema with the template; the draft
    is unchanged then. The draft's test render is cleared: the pages shown are always those
    of its current schema.
    """
    version = get_template_version(session, key, number, for_update=True)
    if version.status != DRAFT:
        raise StateError(f"Version {number} of {key!r} is published and never changes; make "
                         "a new draft from it to edit its schema.")
    spec = parse_schema(key, schema, docx_path=Path(f"{key}.docx"))
    docx = template_docx(session, version)
    problems = template_problems(inspect_docx(docx, version.filename), spec, docx)
    if problems:
        raise TemplateProblems(problems)
    if schema != version.schema_toml:
        version.schema_toml = schema
        version.test_pdf_sha256 = None
        version.test_rendered_at = None
    return version


def new_draft(session: Session, key: str, number: int, user: User | None) -> TemplateVersion:
    """Start the next version of a template as a draft copy of version ``number``."""
    source = get_template_version(session, key, number)
    template = _locked_template(session, key)
    version = TemplateVersion(
        template_id=template.id, number=_next_number(session, template), status=DRAFT,
        docx_sha256=source.docx_sha256, schema_toml=source.schema_toml,
        filename=source.filename, origin="upload", created_by_id=user.id if user else None,
        created_at=utcnow())
    session.add(version)
    session.flush()
    return version


def publish_template(session: Session, key: str, number: int | None, user: User | None
                     ) -> TemplateVersion:
    """Publish a draft (the newest version by default): letters may be made from it from now.

    The template is checked again with its schema, and its example terms must render.
    Raises TemplateProblems, or StateError when the version is already published.
    """
    version = get_template_version(session, key, number, for_update=True)
    if version.status == PUBLISHED:
        raise StateError(f"Version {version.number} of {key!r} is already published.")
    spec = template_spec(version)
    docx = template_docx(session, version)
    problems = template_problems(inspect_docx(docx, version.filename), spec, docx)
    if problems:
        raise TemplateProblems(problems)
    _check_examples(spec, docx)
    version.status = PUBLISHED
    version.published_at = utcnow()
    version.published_by_id = user.id if user else None
    return version


def render_examples(session: Session, key: str, number: int) -> tuple[bytes, str]:
    """Render a version with its example terms: the .docx and the schema it was rendered
    with (to keep with :func:`keep_test_render`). Raises TemplateProblems."""
    version = get_template_version(session, key, number)
    spec = template_spec(version)
    return _check_examples(spec, template_docx(session, version)), version.schema_toml


def keep_test_render(session: Session, key: str, number: int, pdf: bytes,
                       schema: str) -> bool:
    """Keep a test render's PDF with its version, unless the schema changed meanwhile."""
    version = get_template_version(session, key, number, for_update=True)
    if version.schema_toml != schema:
        return False
    version.test_pdf_sha256 = _store_blob(session, pdf)
    version.test_rendered_at = utcnow()
    return True


def letter_template_version(session: Session, version: LetterVersion) -> TemplateVersion | None:
    """Return the template version a letter version was made from.

    A letter version made before the library existed names none: the library's version of
    its template with the same .docx stands for it, if there is one.
    """
    if version.template_version_id is not None:
        return session.get(TemplateVersion, version.template_version_id)
    return session.scalar(
        select(TemplateVersion).join(Template)
        .where(Template.key == version.template_name,
               TemplateVersion.docx_sha256 == version.template_sha256)
        .order_by(TemplateVersion.number.desc()).limit(1))


# --- reading the library ----------------------------------------------------------------------

@dataclass(frozen=True)
class TemplateSummary:
    """A template as the library lists it: its newest version and its published one."""

    key: str
    builtin: bool
    title: str
    description: str
    newest: int
    newest_status: str
    published: int | None
    versions: tuple[dict[str, Any], ...]


def _version_record(version: TemplateVersion, emails: Mapping[int, str]) -> dict[str, Any]:
    return {
        "number": version.number, "status": version.status, "origin": version.origin,
        "filename": version.filename, "docx_sha256": version.docx_sha256,
        "created_at": version.created_at, "published_at": version.published_at,
        "created_by": emails.get(version.created_by_id or 0),
        "published_by": emails.get(version.published_by_id or 0),
        "test_pdf_sha256": version.test_pdf_sha256, "test_rendered_at": version.test_rendered_at,
        "schema_toml": version.schema_toml,
    }


def library_templates(session: Session, *, published_only: bool = False
                      ) -> list[TemplateSummary]:
    """List the library's templates by key, each with its versions (newest first)."""
    versions = list(session.scalars(select(TemplateVersion).join(Template)
                                    .order_by(Template.key, TemplateVersion.number.desc())))
    ids = {v.created_by_id for v in versions} | {v.published_by_id for v in versions}
    emails = dict(session.execute(select(User.id, User.email).where(
        User.id.in_({i for i in ids if i is not None}))).all()) if any(ids) else {}
    grouped: dict[str, list[TemplateVersion]] = {}
    for version in versions:
        if published_only and version.status != PUBLISHED:
            continue
        grouped.setdefault(version.template.key, []).append(version)
    out = []
    for key, items in grouped.items():
        published = next((v for v in items if v.status == PUBLISHED), None)
        shown = published or items[0]
        try:
            spec = template_spec(shown)
            title, description = spec.title, spec.description
        except TemplateError:
            title, description = key, ""
        out.append(TemplateSummary(
            key=key, builtin=items[0].template.builtin, title=title, description=description,
            newest=items[0].number, newest_status=items[0].status,
            published=published.number if published else None,
            versions=tuple(_version_record(v, emails) for v in items)))
    return out


def published_specs(session: Session) -> list[TemplateSpec]:
    """Return the schema of each template's newest published version, by title."""
    specs = []
    for key in session.scalars(select(Template.key).order_by(Template.key)):
        try:
            specs.append(template_spec(published_version(session, key)))
        except (StateError, TemplateError):
            continue
    return sorted(specs, key=lambda spec: (spec.title.lower(), spec.name))
