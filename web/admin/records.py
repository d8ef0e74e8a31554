"""The template library as plain values for the administrators' pages and the API, and the
few steps that span transactions (a test render converts outside any)."""

from __future__ import annotations

from typing import Any

from flask import abort, g, request
from sqlalchemy import select

from workflow.errors import ConversionError, TemplateProblems
from workflow.library import (
    PUBLISHED,
    add_template,
    get_template_version,
    keep_test_render,
    library_templates,
    new_draft,
    publish_template,
    render_examples,
    template_spec,
    update_draft,
)
from workflow.models import Template, TemplateVersion, User
from workflow.schema import TemplateSpec, spec_to_raw
from workflow.template_check import MAX_TEMPLATE_BYTES

from ..database import get_db
from ..documents import get_documents

__all__ = ["version_record", "field_records", "read_template_upload", "read_schema_upload",
           "upload_template", "save_draft", "publish", "start_draft", "run_test_render",
           "template_versions", "library", "is_published", "MAX_SCHEMA_BYTES"]

MAX_SCHEMA_BYTES = 256 * 1024


def field_records(spec: TemplateSpec) -> dict[str, dict[str, Any]]:
    """Describe each field of a schema: its type, label, help, group, example and rules."""
    raw = spec_to_raw(spec)["fields"]
    return {key: {"type": table["type"], "label": table["label"],
                  "required": spec.fields[key].required,
                  **{k: v for k, v in table.items() if k not in ("type", "label")}}
            for key, table in raw.items()}


def version_record(version: TemplateVersion) -> dict[str, Any]:
    """Describe one template version with its schema, as plain values."""
    spec = template_spec(version)
    return {
        "key": version.template.key,
        "builtin": version.template.builtin,
        "version": version.number,
        "status": version.status,
        "origin": version.origin,
        "filename": version.filename,
        "docx_sha256": version.docx_sha256,
        "created_at": version.created_at,
        "published_at": version.published_at,
        "test_pdf_sha256": version.test_pdf_sha256,
        "test_rendered_at": version.test_rendered_at,
        "schema_toml": version.schema_toml,
        "spec": spec,
        "title": spec.title,
        "description": spec.description,
        "document_title": spec.document_title,
        "file_stem": spec.file_stem,
        "list_columns": list(spec.list_columns),
        "fields": field_records(spec),
        "parties": [{"role": p.role, "label": p.label, "name": p.name_term,
                     "email": p.email_term} for p in spec.parties],
    }


def read_template_upload() -> tuple[bytes, str]:
    """Return the bytes and name of the multipart field ``file``, or answer 400 or 413."""
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        abort(400, "file: send the .docx template as the multipart form field 'file'.")
    data = upload.read(MAX_TEMPLATE_BYTES + 1)
    if len(data) > MAX_TEMPLATE_BYTES:
        abort(413, f"{upload.filename[:80]} is larger than "
                   f"{MAX_TEMPLATE_BYTES // (1024 * 1024)} MB, the largest template accepted.")
    return data, upload.filename


def read_schema_upload() -> str | None:
    """Return the TOML schema sent as the multipart field ``schema`` (a file or text), if any."""
    upload = request.files.get("schema")
    if upload is not None and upload.filename:
        data = upload.read(MAX_SCHEMA_BYTES + 1)
        name = upload.filename[:80]
    else:
        text = request.form.get("schema", "")
        if not text.strip():
            return None
        data, name = text.encode("utf-8"), "schema"
    if len(data) > MAX_SCHEMA_BYTES:
        abort(413, f"{name} is larger than {MAX_SCHEMA_BYTES // 1024} KB, the largest schema "
                   "accepted.")
    if not data.strip():
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        abort(400, f"schema: {name} is not UTF-8 text; send the TOML schema as UTF-8.")


def _user(session: Any) -> User | None:
    return session.get(User, g.user.id)


def upload_template(data: bytes, filename: str, key: str | None,
                    schema: str | None) -> dict[str, Any]:
    """Add an upload as a template's next draft version (raises TemplateProblems)."""
    with get_db().transaction() as session:
        return version_record(add_template(session, data, filename, _user(session), key=key,
                                           schema=schema))


def save_draft(key: str, number: int, schema: str) -> dict[str, Any]:
    """Replace a draft's schema (raises TemplateProblems or StateError)."""
    with get_db().transaction() as session:
        return version_record(update_draft(session, key, number, schema))


def publish(key: str, number: int | None) -> dict[str, Any]:
    """Publish a draft (raises TemplateProblems or StateError)."""
    with get_db().transaction() as session:
        return version_record(publish_template(session, key, number, _user(session)))


def start_draft(key: str, number: int) -> dict[str, Any]:
    """Make the next version of a template a draft copy of version ``number``."""
    with get_db().transaction() as session:
        return version_record(new_draft(session, key, number, _user(session)))


def run_test_render(key: str, number: int) -> dict[str, Any]:
    """Render a version with its example terms and convert it to PDF; keep the PDF with the
    version. Raises TemplateProblems (bad examples, a failed render or conversion)."""
    with get_db().transaction() as session:
        docx, schema = render_examples(session, key, number)
    try:
        pdf = get_documents().converter.convert_bytes(docx)
    except ConversionError as exc:
        raise TemplateProblems([f"LibreOffice could not make a PDF of the test render: {exc}"]
                               ) from exc
    with get_db().transaction() as session:
        keep_test_render(session, key, number, pdf, schema)
        return version_record(get_template_version(session, key, number))


def template_versions(key: str, *, published_only: bool = False) -> list[dict[str, Any]]:
    """Describe every version of a template, newest first (raises NotFoundError)."""
    with get_db().transaction() as session:
        get_template_version(session, key)  # an unknown key: NotFoundError
        query = (select(TemplateVersion).join(Template).where(Template.key == key)
                 .order_by(TemplateVersion.number.desc()))
        if published_only:
            query = query.where(TemplateVersion.status == PUBLISHED)
        return [version_record(version) for version in session.scalars(query)]


def library(*, published_only: bool = False) -> list[Any]:
    """List the library's templates (see :func:`workflow.library.library_templates`)."""
    with get_db().transaction() as session:
        return library_templates(session, published_only=published_only)


def is_published(record: dict[str, Any]) -> bool:
    """Say whether a version record is published."""
    return record["status"] == PUBLISHED
