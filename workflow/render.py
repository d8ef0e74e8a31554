"""Fill a .docx template with validated terms, in a sandboxed Jinja environment.

Besides the terms, a template may ask for the dates on which its signers signed, through the
function ``date_signed``: the acknowledgement "this {{ date_signed('executive', letter_date) }}"
reads "this ___ day of July, 2006" in the letter sent for signature, and "this 3rd day of
March, 2027" once rendered again with the executive's date of signing. Those dates are the
render-time *signing context* (role to date), not terms.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2
from docxtpl import DocxTemplate
from jinja2.sandbox import SandboxedEnvironment

from .convert import PdfConverter, default_converter
from .errors import TemplateError
from .files import write_atomic
from .formatting import FILTERS, month_year
from .schema import TemplateSpec
from .template_check import check_template_bytes, check_template_file

__all__ = ["render_docx", "render_pdf", "write_docx", "template_variables", "jinja_environment",
           "ordinal_day", "date_signed", "SIGNING_FUNCTIONS"]

SIGNING_FUNCTIONS = frozenset({"date_signed"})
"""Names a template may call that come from the signing context, not from its terms."""

UNSIGNED_DAY = "___"


def ordinal_day(day: int) -> str:
    """Spell a day of the month as an English ordinal: 1st, 2nd, 3rd, 4th, 11th, 22nd."""
    if 10 <= day % 100 <= 20:
        return f"{day}th"
    return f"{day}{ {1: 'st', 2: 'nd', 3: 'rd'}.get(day % 10, 'th')}"


def date_signed(signing: Mapping[str, dt.date], role: Any, unsigned_month: Any) -> str:
    """Spell a signer's date of signing as an acknowledgement does: "3rd day of March, 2027".

    While the signer with ``role`` has not signed (no date in ``signing``), the day is left
    blank for the pen and the month is that of ``unsigned_month``: "___ day of July, 2006".
    """
    if not isinstance(role, str):
        raise jinja2.TemplateRuntimeError("date_signed: the first argument is a signer's role, "
                                          "as in date_signed('executive', letter_date)")
    if not isinstance(unsigned_month, dt.date):
        raise jinja2.TemplateRuntimeError("date_signed: the second argument is the date whose "
                                          "month is printed before signing, such as "
                                          "letter_date")
    signed = signing.get(role)
    if signed is None:
        return f"{UNSIGNED_DAY} day of {month_year(unsigned_month)}"
    return f"{ordinal_day(signed.day)} day of {month_year(signed)}"


def jinja_environment(signing: Mapping[str, dt.date] | None = None) -> SandboxedEnvironment:
    """Make the environment every template renders in: sandboxed, autoescaped, strict.

    ``signing`` maps a signer's role to their date of signing; ``date_signed`` reads it.
    """
    env = SandboxedEnvironment(autoescape=True, undefined=jinja2.StrictUndefined,
                               keep_trailing_newline=True)
    env.filters.update(FILTERS)
    dates = dict(signing or {})
    for role, day in dates.items():
        if not isinstance(role, str) or not isinstance(day, dt.date):
            raise ValueError("signing maps a role name to a datetime.date")

    def signed_on(role: Any, unsigned_month: Any) -> str:
        return date_signed(dates, role, unsigned_month)

    env.globals["date_signed"] = signed_on
    return env


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
    document = DocxTemplate(source)
    try:
        document.render(dict(terms), jinja_env=jinja_environment(signing), autoescape=True)
    except jinja2.exceptions.SecurityError as exc:
        raise TemplateError(f"{spec.docx_path.name}: the template tries something the "
                            f"sandbox forbids ({exc}).") from exc
    except jinja2.TemplateError as exc:
        raise TemplateError(f"{spec.docx_path.name}: {exc}.") from exc
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def write_docx(spec: TemplateSpec, terms: Mapping[str, Any], path: Path) -> None:
    """Render a template and write the .docx atomically to ``path``."""
    write_atomic(Path(path), render_docx(spec, terms))


def template_variables(spec: TemplateSpec) -> set[str]:
    """List the variables a template's body, headers and footers use (its terms).

    The signing functions (``date_signed``) are not terms, so they are not listed.
    """
    check_template_file(spec.docx_path)
    try:
        return set(DocxTemplate(spec.docx_path).get_undeclared_template_variables(
            jinja_environment())) - SIGNING_FUNCTIONS
    except jinja2.TemplateError as exc:
        raise TemplateError(f"{spec.docx_path.name}: {exc}.") from exc


def render_pdf(docx: bytes, converter: PdfConverter | None = None) -> bytes:
    """Convert rendered .docx bytes to PDF with a long-lived LibreOffice."""
    return (converter or default_converter()).convert_bytes(docx)
