"""Fill a .docx template with validated terms, in a sandboxed Jinja environment."""

from __future__ import annotations

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
from .formatting import FILTERS
from .schema import TemplateSpec
from .template_check import check_template_file

__all__ = ["render_docx", "render_pdf", "write_docx", "template_variables", "jinja_environment"]


def jinja_environment() -> SandboxedEnvironment:
    """Make the environment every template renders in: sandboxed, autoescaped, strict."""
    env = SandboxedEnvironment(autoescape=True, undefined=jinja2.StrictUndefined,
                               keep_trailing_newline=True)
    env.filters.update(FILTERS)
    return env


def render_docx(spec: TemplateSpec, terms: Mapping[str, Any]) -> bytes:
    """Render a template with validated terms and return the .docx bytes."""
    check_template_file(spec.docx_path)
    template = DocxTemplate(spec.docx_path)
    try:
        template.render(dict(terms), jinja_env=jinja_environment(), autoescape=True)
    except jinja2.exceptions.SecurityError as exc:
        raise TemplateError(f"{spec.docx_path.name}: the template tries something the "
                            f"sandbox forbids ({exc}).") from exc
    except jinja2.TemplateError as exc:
        raise TemplateError(f"{spec.docx_path.name}: {exc}.") from exc
    buffer = io.BytesIO()
    template.save(buffer)
    return buffer.getvalue()


def write_docx(spec: TemplateSpec, terms: Mapping[str, Any], path: Path) -> None:
    """Render a template and write the .docx atomically to ``path``."""
    write_atomic(Path(path), render_docx(spec, terms))


def template_variables(spec: TemplateSpec) -> set[str]:
    """List the variables a template's body, headers and footers use."""
    check_template_file(spec.docx_path)
    try:
        return set(DocxTemplate(spec.docx_path).get_undeclared_template_variables(
            jinja_environment()))
    except jinja2.TemplateError as exc:
        raise TemplateError(f"{spec.docx_path.name}: {exc}.") from exc


def render_pdf(docx: bytes, converter: PdfConverter | None = None) -> bytes:
    """Convert rendered .docx bytes to PDF with a long-lived LibreOffice."""
    return (converter or default_converter()).convert_bytes(docx)
