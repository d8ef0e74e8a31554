"""Fill a .docx template with validated terms, in a sandboxed Jinja environment.

Besides the terms, a template has two signing fields, written as Jinja calls:

* ``{{ sign_here('ROLE') }}`` marks where the party with that role signs. It prints the
  signature line (a rule of underscores, no words) between two Word bookmarks,
  ``sign_here_ROLE`` and ``end_sign_here_ROLE``; LibreOffice exports them as named
  destinations of the PDF, which is how :func:`workflow.pdfs.signing_fields` finds the line,
  exactly, without searching the text.
* ``{{ date_signed('ROLE') }}`` prints a blank line until the party has signed, then the date
  of signing ("March 3, 2027"); ``{{ date_signed('ROLE', letter_date) }}`` writes it the way
  an acknowledgement does: "___ day of July, 2006" (the month of ``letter_date``) unsigned,
  "3rd day of March, 2027" signed. Either is bookmarked ``date_signed_ROLE`` and
  ``end_date_signed_ROLE``.

The dates of signing are the render-time *signing context* (role to date), not terms. A
field's call leaves nothing of itself in the document: it is rendered as a marker that is then
replaced by runs of the text around it, with that text's formatting, and the bookmarks.
"""

from __future__ import annotations

import copy
import datetime as dt
import io
import re
import secrets
import threading
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from types import CodeType
from typing import Any

import jinja2
from docxtpl import DocxTemplate
from jinja2 import nodes
from jinja2.sandbox import SandboxedEnvironment
from lxml import etree
from markupsafe import Markup

from .convert import PdfConverter, default_converter
from .errors import TemplateError
from .files import write_atomic
from .formatting import FILTERS, long_date, month_year
from .schema import TemplateSpec, document_names
from .template_check import check_template_bytes, check_template_file

__all__ = ["render_docx", "render_pdf", "write_docx", "template_variables", "jinja_environment",
           "ordinal_day", "date_signed", "SIGNING_FUNCTIONS", "check_signing_fields",
           "field_bookmark", "SIGNATURE_LINE", "DATE_LINE", "SIGN_HERE", "DATE_SIGNED"]

SIGN_HERE = "sign_here"
DATE_SIGNED = "date_signed"
SIGNING_FUNCTIONS = frozenset({SIGN_HERE, DATE_SIGNED})
"""Names a template may call that come from the signing context, not from its terms."""

UNSIGNED_DAY = "___"
SIGNATURE_LINE = "_" * 34
"""What ``sign_here`` prints: a signature line about 2.6 inches long in 12-point type."""
DATE_LINE = "_" * 20
"""What ``date_signed('ROLE')`` prints until the party signs."""
END_PREFIX = "end_"
# Word keeps bookmark names of at most 40 characters.
MAX_BOOKMARK = 40

_W = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
_XML_SPACE = "{http://www.w3.org/XML/1998/namespace}space"
_DECLARATION = re.compile(r"^\s*<\?xml[^>]*\?>")
# Bookmark ids of the fields start far above the small ids Word gives its own bookmarks.
_FIRST_BOOKMARK_ID = 900_000


def _w(tag: str) -> str:
    return f"{{{_W}}}{tag}"


def field_bookmark(kind: str, role: str, *, end: bool = False) -> str:
    """Name the Word bookmark of a signing field: ``sign_here_company``, ``end_...`` after it.

    ``kind`` is ``sign_here`` or ``date_signed``. The PDF keeps the name as a named
    destination.
    """
    if kind not in SIGNING_FUNCTIONS:
        raise ValueError(f"kind must be one of {sorted(SIGNING_FUNCTIONS)}")
    return f"{END_PREFIX if end else ''}{kind}_{role}"


def ordinal_day(day: int) -> str:
    """Spell a day of the month as an English ordinal: 1st, 2nd, 3rd, 4th, 11th, 22nd."""
    if 10 <= day % 100 <= 20:
        return f"{day}th"
    return f"{day}{ {1: 'st', 2: 'nd', 3: 'rd'}.get(day % 10, 'th')}"


def date_signed(signing: Mapping[str, dt.date], role: Any, unsigned_month: Any = None) -> str:
    """Spell a party's date of signing: "March 3, 2027", or a blank line before they sign.

    With ``unsigned_month`` (a date), spell it as an acknowledgement does: "3rd day of March,
    2027" signed, and "___ day of July, 2006" (the month of ``unsigned_month``) before.
    """
    if not isinstance(role, str):
        raise jinja2.TemplateRuntimeError("date_signed: the first argument is a party's role, "
                                          "in quotes, as in date_signed('executive')")
    if unsigned_month is not None and not isinstance(unsigned_month, dt.date):
        raise jinja2.TemplateRuntimeError("date_signed: the second argument is the date whose "
                                          "month is printed before signing, such as "
                                          "letter_date")
    signed = signing.get(role)
    if unsigned_month is None:
        return DATE_LINE if signed is None else long_date(signed)
    if signed is None:
        return f"{UNSIGNED_DAY} day of {month_year(unsigned_month)}"
    return f"{ordinal_day(signed.day)} day of {month_year(signed)}"


class _Fields:
    """The signing fields one rendering prints: each call leaves a marker in the rendered
    text, which :meth:`place` replaces with the field's runs and bookmarks."""

    def __init__(self, parties: tuple[str, ...]) -> None:
        self.parties = parties
        self.nonce = secrets.token_hex(8)
        self.marker_re = re.compile(f"CPFIELD{self.nonce}N([0-9]+)E")
        self.items: list[tuple[str, str, str]] = []
        self.bookmarked: set[tuple[str, str]] = set()
        self.next_id = _FIRST_BOOKMARK_ID

    def _role(self, kind: str, role: Any) -> str:
        if not isinstance(role, str):
            raise jinja2.TemplateRuntimeError(
                f"{kind}: the first argument is a party's role, in quotes, as in "
                f"{kind}('company')")
        if role not in self.parties:
            declared = ", ".join(self.parties) or "none"
            raise jinja2.TemplateRuntimeError(
                f"{kind}('{role}'): the schema declares no party with that role (its "
                f"parties: {declared})")
        return role

    def marker(self, kind: str, role: Any, text: str) -> Markup:
        role = self._role(kind, role)
        if kind == SIGN_HERE and any(k == kind and r == role for k, r, _ in self.items):
            raise jinja2.TemplateRuntimeError(
                f"sign_here('{role}') is printed twice; a party signs in one place")
        self.items.append((kind, role, text))
        return Markup(f"CPFIELD{self.nonce}N{len(self.items) - 1}E")

    def place(self, xml: str) -> str:
        """Replace the markers in one rendered part with the fields' runs and bookmarks."""
        if self.nonce not in xml:
            return xml
        declaration = _DECLARATION.match(xml)
        body = xml[declaration.end():] if declaration else xml
        root = etree.fromstring(body.encode("utf-8"))
        for text in [t for t in root.iter(_w("t")) if t.text and self.nonce in t.text]:
            self._split(text)
        placed = etree.tostring(root, encoding="unicode")
        if self.nonce in placed:
            raise TemplateError("sign_here and date_signed belong in the text of the "
                                "document, not in a field code, a property or an attribute.")
        return (declaration.group(0) if declaration else "") + placed

    def _bookmark(self, name: str) -> tuple[etree._Element, etree._Element]:
        start = etree.Element(_w("bookmarkStart"))
        start.set(_w("id"), str(self.next_id))
        start.set(_w("name"), name)
        end = etree.Element(_w("bookmarkEnd"))
        end.set(_w("id"), str(self.next_id))
        self.next_id += 1
        return start, end

    @staticmethod
    def _run(properties: etree._Element | None, text: str) -> etree._Element:
        run = etree.Element(_w("r"))
        if properties is not None:
            run.append(copy.deepcopy(properties))
        t = etree.SubElement(run, _w("t"))
        t.set(_XML_SPACE, "preserve")
        t.text = text
        return run

    def _split(self, text: etree._Element) -> None:
        """Split the run holding ``text`` at each marker, keeping the run's formatting."""
        run = text.getparent()
        if run is None or run.tag != _w("r"):
            raise TemplateError("sign_here and date_signed belong in the text of the document.")
        parent = run.getparent()
        assert parent is not None
        pieces = self.marker_re.split(text.text or "")
        if len(pieces) == 1:
            return  # not a whole marker: refused by the caller's check
        properties = run.find(_w("rPr"))
        children = list(run)
        after = children[children.index(text) + 1:]
        for child in after:
            run.remove(child)
        text.text = pieces[0]
        text.set(_XML_SPACE, "preserve")
        nodes_after: list[etree._Element] = []
        rest = run
        for index in range(1, len(pieces), 2):
            kind, role, words = self.items[int(pieces[index])]
            field = self._run(properties, words)
            if (kind, role) in self.bookmarked:
                nodes_after.append(field)  # a second date of one party: text only
            else:
                self.bookmarked.add((kind, role))
                start, end = self._bookmark(field_bookmark(kind, role))
                after_start, after_end = self._bookmark(field_bookmark(kind, role, end=True))
                nodes_after += [start, field, end, after_start, after_end]
            rest = self._run(properties, pieces[index + 1])
            nodes_after.append(rest)
        for child in after:
            rest.append(child)
        position = parent.index(run)
        for offset, node in enumerate(nodes_after, start=1):
            parent.insert(position + offset, node)
        for piece in (run, rest):
            if self._empty(piece):
                parent.remove(piece)

    @staticmethod
    def _empty(run: etree._Element) -> bool:
        """Whether a run holds nothing but its formatting and empty text."""
        return all(child.tag == _w("rPr") or (child.tag == _w("t") and not child.text)
                   for child in run)


class _FieldTemplate(DocxTemplate):
    """A docxtpl template whose rendered parts get their signing fields placed."""

    fields: _Fields | None = None
    _patched: OrderedDict[str, str] = OrderedDict()
    _patched_lock = threading.Lock()
    _PATCHED_SIZE = 32

    def patch_xml(self, src_xml: str) -> str:
        """Clean a part's XML for Jinja once per distinct XML (docxtpl's is a pure function)."""
        with self._patched_lock:
            patched = self._patched.get(src_xml)
            if patched is not None:
                self._patched.move_to_end(src_xml)
                return patched
        patched = super().patch_xml(src_xml)
        with self._patched_lock:
            self._patched[src_xml] = patched
            while len(self._patched) > self._PATCHED_SIZE:
                self._patched.popitem(last=False)
        return patched

    def render_xml_part(self, src_xml: str, part: Any, context: Any,
                        jinja_env: Any = None) -> str:
        xml = super().render_xml_part(src_xml, part, context, jinja_env)
        return self.fields.place(xml) if self.fields is not None else xml


class _CompileOnceEnvironment(SandboxedEnvironment):
    """A sandboxed environment that compiles each distinct template source once per process.

    Compiling a letter's XML costs about half of rendering it, and every render builds a new
    environment (its signing context differs). The code Jinja generates depends only on the
    source and on settings fixed at compile time (autoescape, the names of the filters and
    tests), never on the globals, which are looked up when the template runs; so the code
    object is shared between environments whose such settings are the same.
    """

    _cache: OrderedDict[tuple[Any, ...], CodeType] = OrderedDict()
    _cache_lock = threading.Lock()
    _CACHE_SIZE = 32

    def compile(  # type: ignore[override]
            self, source: Any, name: str | None = None, filename: str | None = None,
            raw: bool = False, defer_init: bool = False) -> Any:
        """Return the code of ``source``, compiled once (raw Python source is not cached)."""
        if raw or not isinstance(source, str):
            return super().compile(source, name, filename, raw, defer_init)  # type: ignore[call-overload]
        key = (type(self), source, name, filename, defer_init, self.autoescape,
               frozenset(self.filters), frozenset(self.tests))
        with self._cache_lock:
            code = self._cache.get(key)
            if code is not None:
                self._cache.move_to_end(key)
                return code
        code = super().compile(source, name, filename, False, defer_init)
        with self._cache_lock:
            self._cache[key] = code
            while len(self._cache) > self._CACHE_SIZE:
                self._cache.popitem(last=False)
        return code


def jinja_environment(signing: Mapping[str, dt.date] | None = None, *,
                      parties: tuple[str, ...] = ()) -> SandboxedEnvironment:
    """Make the environment every template renders in: sandboxed, autoescaped, strict.

    ``signing`` maps a party's role to their date of signing; ``date_signed`` reads it.
    ``parties`` are the roles the template's schema declares, the only ones its fields may
    name.
    """
    env, _fields = _environment(signing, parties)
    return env


def _environment(signing: Mapping[str, dt.date] | None,
                 parties: tuple[str, ...]) -> tuple[SandboxedEnvironment, _Fields]:
    env = _CompileOnceEnvironment(autoescape=True, undefined=jinja2.StrictUndefined,
                                  keep_trailing_newline=True)
    env.filters.update(FILTERS)
    dates = dict(signing or {})
    for role, day in dates.items():
        if not isinstance(role, str) or not isinstance(day, dt.date):
            raise ValueError("signing maps a role name to a datetime.date")
    fields = _Fields(parties)

    def sign_here(role: Any) -> Markup:
        return fields.marker(SIGN_HERE, role, SIGNATURE_LINE)

    def signed_on(role: Any, unsigned_month: Any = None) -> Markup:
        return fields.marker(DATE_SIGNED, role, date_signed(dates, role, unsigned_month))

    env.globals[SIGN_HERE] = sign_here
    env.globals[DATE_SIGNED] = signed_on
    return env, fields


def render_docx(spec: TemplateSpec, terms: Mapping[str, Any], *,
                signing: Mapping[str, dt.date] | None = None,
                template: bytes | None = None) -> bytes:
    """Render a template with validated terms and return the .docx bytes.

    ``signing`` maps roles to dates of signing (see :func:`date_signed`); without it the
    letter is rendered unsigned. ``template`` is the .docx to render instead of the file
    ``spec.docx_path`` (the exact bytes a letter version was made from).
    """
    if template is None:
        check_template_file(spec.docx_path)
        source: Any = spec.docx_path
    else:
        check_template_bytes(template, spec.docx_path.name)
        source = io.BytesIO(template)
    document = _FieldTemplate(source)
    env, document.fields = _environment(signing, spec.signers)
    try:
        document.render(dict(terms), jinja_env=env, autoescape=True)
    except jinja2.exceptions.SecurityError as exc:
        raise TemplateError(f"{spec.docx_path.name}: the template tries something the "
                            f"sandbox forbids ({exc}).") from exc
    except jinja2.TemplateError as exc:
        raise TemplateError(f"{spec.docx_path.name}: {exc}.") from exc
    except TemplateError as exc:
        raise TemplateError(f"{spec.docx_path.name}: {exc}") from exc
    properties = document.docx.core_properties
    if any(document.fields.nonce in (getattr(properties, name) or "")
           for name in ("author", "comments", "identifier", "language", "subject", "title")):
        raise TemplateError(f"{spec.docx_path.name}: sign_here and date_signed belong in the "
                            "text of the document, not in its properties.")
    # The letter's own title (its template's document_title, filled in) becomes the PDF's
    # title, which viewers and screen readers announce instead of the file name.
    properties.title = document_names(spec, terms).title
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def write_docx(spec: TemplateSpec, terms: Mapping[str, Any], path: Path) -> None:
    """Render a template and write the .docx atomically to ``path``."""
    write_atomic(Path(path), render_docx(spec, terms))


def template_variables(spec: TemplateSpec) -> set[str]:
    """List the variables a template's body, headers and footers use (its terms).

    The signing functions (``sign_here``, ``date_signed``) are not terms, so they are not
    listed.
    """
    check_template_file(spec.docx_path)
    try:
        return set(DocxTemplate(spec.docx_path).get_undeclared_template_variables(
            jinja_environment())) - SIGNING_FUNCTIONS
    except jinja2.TemplateError as exc:
        raise TemplateError(f"{spec.docx_path.name}: {exc}.") from exc


def _template_source(template: DocxTemplate) -> str:
    """The Jinja source of a template's body, headers and footers, as docxtpl renders it."""
    source = template.patch_xml(template.get_xml())
    for uri in (template.HEADER_URI, template.FOOTER_URI):
        for _key, part in template.get_headers_footers(uri):
            source += template.patch_xml(template.get_part_xml(part))
    return source


def check_signing_fields(spec: TemplateSpec, docx_bytes: bytes) -> list[str]:
    """List what is wrong with a template's signing fields for its schema (empty when right).

    Every party of ``spec`` needs exactly one ``{{ sign_here('ROLE') }}``; ``sign_here`` and
    ``date_signed`` may name only the schema's roles, each in quotes. Each problem is a
    sentence naming the role or the call.
    """
    name = spec.docx_path.name
    try:
        check_template_bytes(docx_bytes, name)
        template = DocxTemplate(io.BytesIO(docx_bytes))
        template.init_docx()
        parsed = jinja_environment(parties=spec.signers).parse(_template_source(template))
    except TemplateError as exc:
        return [str(exc)]
    except jinja2.TemplateSyntaxError as exc:
        return [f"{name}: the template's Jinja does not parse ({exc.message}, line "
                f"{exc.lineno} of its XML)."]
    except Exception as exc:  # python-docx and lxml raise many kinds on a damaged file
        return [f"{name}: not a Word document that can be read ({exc})."]
    problems: list[str] = []
    signatures: dict[str, int] = {}
    declared = ", ".join(spec.signers) or "none"
    for call in parsed.find_all(nodes.Call):
        if not isinstance(call.node, nodes.Name) or call.node.name not in SIGNING_FUNCTIONS:
            continue
        kind = call.node.name
        first = call.args[0] if call.args else None
        if not isinstance(first, nodes.Const) or not isinstance(first.value, str) \
                or call.kwargs or call.dyn_args or call.dyn_kwargs:
            problems.append(f"{name}: {kind} names its party's role in quotes, as in "
                            f"{kind}('{spec.signers[0] if spec.signers else 'company'}').")
            continue
        role = first.value
        if kind == SIGN_HERE and len(call.args) != 1:
            problems.append(f"{name}: sign_here('{role}') takes the role only.")
        if kind == DATE_SIGNED and len(call.args) > 2:
            problems.append(f"{name}: date_signed('{role}', ...) takes the role and, for an "
                            "acknowledgement, a date whose month is printed before signing.")
        if role not in spec.signers:
            problems.append(f"{name}: {kind}('{role}') names a role the schema does not "
                            f"declare (its parties: {declared}).")
            continue
        if kind == SIGN_HERE:
            signatures[role] = signatures.get(role, 0) + 1
    for party in spec.parties:
        count = signatures.get(party.role, 0)
        if count == 0:
            problems.append(f"{name}: {party.label} ({party.role}) has no signature field; "
                            f"put {{{{ sign_here('{party.role}') }}}} where they sign, above "
                            "their printed name.")
        elif count > 1:
            problems.append(f"{name}: sign_here('{party.role}') appears {count} times; a "
                            "party signs in one place.")
        longest = field_bookmark(DATE_SIGNED, party.role, end=True)
        if len(longest) > MAX_BOOKMARK:
            problems.append(f"{name}: the role {party.role!r} is too long for a signing "
                            f"field: Word keeps bookmark names of at most {MAX_BOOKMARK} "
                            f"characters, and {longest!r} has {len(longest)}; use a role of "
                            f"at most {MAX_BOOKMARK - len(longest) + len(party.role)}.")
    return problems


def render_pdf(docx: bytes, converter: PdfConverter | None = None) -> bytes:
    """Convert rendered .docx bytes to PDF with a long-lived LibreOffice."""
    return (converter or default_converter()).convert_bytes(docx)
