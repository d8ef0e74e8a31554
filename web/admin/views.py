"""The template library's pages: the list and upload, each version's schema form, its test
render's pages, and publishing.

Each view parses the request, calls one step of :mod:`web.admin.records` (a domain function
in a transaction), and renders after it; a refused template comes back with every problem
listed, and nothing is stored.
"""

from __future__ import annotations

from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from workflow.errors import StateError, TemplateProblems
from workflow.library import key_from_filename
from workflow.schema import FIELD_TYPES, schema_toml

from ..downloads import send_document
from ..letters.records import load_blob
from ..previews import get_previews, send_page_picture
from . import bp
from .forms import RULES, TYPE_LABELS, SchemaForm
from .records import (
    library,
    publish,
    read_schema_upload,
    read_template_upload,
    run_test_render,
    save_draft,
    start_draft,
    template_versions,
    upload_template,
)

DOCX_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


def _render_library(*, problems: list[str] | None = None, values: dict[str, str] | None = None,
                    status: int = 200) -> tuple[str, int]:
    return render_template("admin/templates.html", templates=library(),
                           problems=problems or [], values=values or {}), status


@bp.get("/templates")
def templates() -> tuple[str, int]:
    """The template library: every template, its versions' statuses, and the upload form."""
    return _render_library()


@bp.post("/templates")
def upload() -> Response | tuple[str, int]:
    """Upload a .docx (and optionally its TOML schema) as a template's next draft."""
    data, filename = read_template_upload()
    key = request.form.get("key", "").strip()
    try:
        record = upload_template(data, filename, key or None, read_schema_upload())
    except TemplateProblems as exc:
        return _render_library(problems=exc.problems, status=422,
                               values={"key": key or key_from_filename(filename)})
    flash(f"Version {record['version']} of {record['key']} is a draft. Check its terms, "
          "make a test render, then publish it.", "success")
    return redirect(url_for(".version", key=record["key"], number=record["version"]))


def _versions(key: str) -> list[dict[str, Any]]:
    records = template_versions(key)
    if not records:
        abort(404, f"There is no template named {key[:64]!r}.")
    return records


@bp.get("/templates/<key>")
def template(key: str) -> Response:
    """A template: its newest version."""
    return redirect(url_for(".version", key=key, number=_versions(key)[0]["version"]))


def _render_version(key: str, number: int, *, form: SchemaForm | None = None,
                    problems: list[str] | None = None, status: int = 200) -> tuple[str, int]:
    versions = _versions(key)
    record = next((v for v in versions if v["version"] == number), None)
    if record is None:
        abort(404, f"The template {key!r} has no version {number}.")
    pages: list[tuple[int, int, int]] = []
    sha = record["test_pdf_sha256"]
    if sha:
        sizes = get_previews().page_sizes(sha, lambda: load_blob(sha))
        pages = [(n, w, h) for n, (w, h) in enumerate(sizes, start=1)]
    form = form or SchemaForm.from_spec(record["spec"])
    return render_template(
        "admin/version.html", record=record, versions=versions, form=form, pages=pages,
        problems=problems or form.problems, types=[(t, TYPE_LABELS[t]) for t in FIELD_TYPES],
        rules=RULES, field_keys=list(record["spec"].fields)), status


@bp.get("/templates/<key>/versions/<int:number>")
def version(key: str, number: int) -> tuple[str, int]:
    """One version: its schema (a form while it is a draft), its test render, publishing."""
    return _render_version(key, number)


@bp.post("/templates/<key>/versions/<int:number>")
def save(key: str, number: int) -> Response | tuple[str, int]:
    """Save the schema form of a draft; every problem comes back beside the form."""
    record = next((v for v in _versions(key) if v["version"] == number), None)
    if record is None:
        abort(404, f"The template {key!r} has no version {number}.")
    form = SchemaForm.from_request(record["spec"], request.form)
    raw = form.to_raw()
    if form.problems:
        return _render_version(key, number, form=form, status=422)
    try:
        save_draft(key, number, schema_toml(raw))
    except TemplateProblems as exc:
        return _render_version(key, number, form=form, problems=exc.problems, status=422)
    except StateError as exc:
        flash(str(exc), "error")
        return redirect(url_for(".version", key=key, number=number))
    flash("The schema is saved. Make a test render to see the pages with the example terms.",
          "success")
    return redirect(url_for(".version", key=key, number=number))


@bp.post("/templates/<key>/versions/<int:number>/test-render")
def test_render(key: str, number: int) -> Response | tuple[str, int]:
    """Render the version with its example terms and show the PDF's pages."""
    try:
        run_test_render(key, number)
    except TemplateProblems as exc:
        return _render_version(key, number, problems=exc.problems, status=422)
    flash("Test render made with the example terms: its pages are below.", "success")
    return redirect(url_for(".version", key=key, number=number, _anchor="test-render"))


@bp.post("/templates/<key>/versions/<int:number>/publish")
def publish_version(key: str, number: int) -> Response | tuple[str, int]:
    """Publish a draft: new letters of this template are made from it."""
    try:
        publish(key, number)
    except TemplateProblems as exc:
        return _render_version(key, number, problems=exc.problems, status=422)
    flash(f"Version {number} of {key} is published: new letters are made from it.", "success")
    return redirect(url_for(".version", key=key, number=number))


@bp.post("/templates/<key>/versions/<int:number>/new-draft")
def new_draft(key: str, number: int) -> Response:
    """Start the next version as a draft copy of this one, to edit its schema."""
    record = start_draft(key, number)
    flash(f"Version {record['version']} is a draft copy of version {number}.", "success")
    return redirect(url_for(".version", key=key, number=record["version"]))


@bp.get("/templates/<key>/versions/<int:number>/pages/<int:page>.png")
def test_page(key: str, number: int, page: int) -> Response:
    """A picture of one page of a version's test render."""
    record = next((v for v in _versions(key) if v["version"] == number), None)
    sha = record["test_pdf_sha256"] if record else None
    if not sha:
        abort(404, "This version has no test render yet.")
    png = get_previews().png(sha, page, lambda: load_blob(sha))
    if png is None:
        abort(404, f"The test render has no page {page}.")
    return send_page_picture(png, etag=f"{sha}-{page}")


def _record(key: str, number: int) -> dict[str, Any]:
    record = next((v for v in _versions(key) if v["version"] == number), None)
    if record is None:
        abort(404, f"The template {key!r} has no version {number}.")
    return record


@bp.get("/templates/<key>/versions/<int:number>/template.docx")
def download_docx(key: str, number: int) -> Response:
    """Download a version's .docx."""
    record = _record(key, number)
    return send_document(load_blob(record["docx_sha256"]), filename=f"{key}-v{number}.docx",
                         media_type=DOCX_TYPE, sha256=record["docx_sha256"])


@bp.get("/templates/<key>/versions/<int:number>/schema.toml")
def download_schema(key: str, number: int) -> Response:
    """Download a version's TOML schema."""
    record = _record(key, number)
    return send_document(record["schema_toml"].encode("utf-8"),
                         filename=f"{key}-v{number}.toml", media_type="application/toml",
                         sha256=None)
