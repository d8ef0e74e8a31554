"""The API's routes: the template library (templates, their versions and schemas; uploads and
publishing by administrators), letters, their terms and their documents."""

from __future__ import annotations

import json
from typing import Any

from flask import abort, current_app, g, jsonify, request, url_for
from werkzeug.wrappers import Response

from workflow.errors import NotFoundError, StateError, TemplateProblems, TermsError
from workflow.letters import (
    COUNT_LIMIT,
    PageCursorError,
    create_letter,
    list_letters,
    queue_pending_pdfs,
    revise_terms,
)
from workflow.models import User
from workflow.representations import letter_json, summary_json
from workflow.schema import json_schema, terms_to_json, validate_terms
from workflow.states import LetterStatus

from ..admin.records import (
    library,
    publish,
    read_schema_upload,
    read_template_upload,
    template_versions,
    upload_template,
)
from ..database import get_db
from ..documents import get_documents
from ..downloads import send_document
from ..execution import signature_progress
from ..jobs import no_worker_note
from ..letters.records import (
    find_document,
    iso,
    letter_detail,
    letter_summary,
    load_blob,
    published_templates,
    spec_for,
    template_titles,
)
from ..numbers import NumberError, loads_json, query_number
from . import bp

MAX_PER_PAGE = 100
STATUS_VALUES = tuple(s.value for s in LetterStatus)


def _client() -> dict[str, str | None]:
    return {"ip": request.remote_addr, "user_agent": request.user_agent.string or None}


def json_body() -> dict[str, Any]:
    """Parse the request body as a JSON object (whatever its Content-Type), or answer 400."""
    data = request.get_data(cache=True)  # answers 413 itself beyond MAX_CONTENT_LENGTH
    if not data.strip():
        abort(400, "The request body is empty; send a JSON object.")
    try:
        body = loads_json(data.decode("utf-8"))  # JSON between systems is UTF-8 (RFC 8259)
    except NumberError as exc:
        abort(400, str(exc))
    except UnicodeDecodeError:
        abort(400, "The request body is not UTF-8 text; send a JSON object.")
    except json.JSONDecodeError as exc:
        abort(400, f"The request body is not valid JSON ({exc.msg} at line {exc.lineno}, "
                   f"column {exc.colno}).")
    except RecursionError:
        abort(400, "The request body is nested too deeply.")
    if not isinstance(body, dict):
        abort(400, "The request body must be a JSON object, such as "
                   '{"template": "...", "terms": {...}}.')
    return body


def _invalid(errors: dict[str, str]) -> tuple[Response, int]:
    count = len(errors)
    noun = "field has an error" if count == 1 else "fields have errors"
    return jsonify(error=f"The terms are not valid: {count} {noun}.", errors=errors), 422


def _terms_of(body: dict[str, Any]) -> Any:
    terms = body.get("terms")
    if terms is None:
        raise TermsError({"terms": "is required: a JSON object of term keys and values"})
    return terms


def base_url() -> str:
    """The address this request came to, without a trailing slash: the start of every
    address an answer gives (:mod:`workflow.representations` builds them)."""
    return request.url_root.rstrip("/")


def _summary_json(letter: dict[str, Any]) -> dict[str, Any]:
    return summary_json(letter, base_url())


def _letter_json(letter_id: int) -> dict[str, Any]:
    with get_db().transaction() as session:
        letter = letter_json(session, letter_id, base_url=base_url(),
                             template_dir=_template_dir())
    # Each document's "note": why one still being made is not being made (no worker runs).
    documents = [d for v in letter["versions"] for d in v["documents"]]
    waiting = [d["status"] in ("pending", "generating") for d in documents]
    note = no_worker_note(current_app.config) if any(waiting) else None
    for document, waits in zip(documents, waiting, strict=True):
        document["note"] = note if waits else None
    return letter


def _require_admin() -> None:
    if not g.user.is_admin:
        abort(403, "Only an administrator may upload or publish templates.")


def _version_json(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "key": record["key"],
        "version": record["version"],
        "status": record["status"],
        "origin": record["origin"],
        "filename": record["filename"],
        "docx_sha256": record["docx_sha256"],
        "created_at": iso(record["created_at"]),
        "published_at": iso(record["published_at"]),
        "title": record["title"],
        "description": record["description"],
        "document_title": record["document_title"],
        "file_stem": record["file_stem"],
        "list_columns": record["list_columns"],
        "fields": record["fields"],
        "parties": record["parties"],
        "schema_toml": record["schema_toml"],
        "url": url_for(".template", key=record["key"], _external=True),
    }


def _template_problems(exc: TemplateProblems) -> tuple[Response, int]:
    count = len(exc.problems)
    noun = "problem" if count == 1 else "problems"
    return jsonify(error=f"The template was refused: {count} {noun}.",
                   errors=exc.problems), 422


@bp.get("/templates")
def templates() -> Response:
    """List the templates: the published ones letters are made from (administrators also
    see drafts), each with its status and versions."""
    admin = g.user.is_admin
    specs = {spec.name: spec for spec in published_templates()}
    answer = []
    for summary in library(published_only=not admin):
        spec = specs.get(summary.key)
        answer.append({
            "name": summary.key,
            "key": summary.key,
            "title": summary.title,
            "description": summary.description,
            "builtin": summary.builtin,
            "status": "published" if summary.published else summary.newest_status,
            "published_version": summary.published,
            "newest_version": summary.newest,
            "signers": list(spec.signers) if spec else [],
            "parties": [{"role": p.role, "label": p.label} for p in spec.parties]
            if spec else [],
            "schema": url_for(".template_schema", name=summary.key, _external=True)
            if spec else None,
            "url": url_for(".template", key=summary.key, _external=True),
        })
    return jsonify(templates=answer)


@bp.post("/templates")
def add_template() -> tuple[Response, int, dict[str, str]] | tuple[Response, int]:
    """Upload a template (multipart ``file``, optional ``key`` and ``schema``): its next
    version, a draft. 422 with every problem when it is refused (administrators only)."""
    _require_admin()
    data, filename = read_template_upload()
    key = request.form.get("key", "").strip() or None
    try:
        record = upload_template(data, filename, key, read_schema_upload())
    except TemplateProblems as exc:
        return _template_problems(exc)
    answer = _version_json(record)
    return jsonify(answer), 201, {"Location": answer["url"]}


@bp.get("/templates/<key>")
def template(key: str) -> Response:
    """A template and its versions (newest first) with their status and schema; staff see
    its published versions only."""
    admin = g.user.is_admin
    versions = template_versions(key, published_only=not admin)
    if not versions:
        raise NotFoundError(f"There is no template named {key[:64]!r}.")
    newest = versions[0]
    published = next((v for v in versions if v["status"] == "published"), None)
    return jsonify(key=key, title=newest["title"], builtin=newest["builtin"],
                   status="published" if published else newest["status"],
                   published_version=published["version"] if published else None,
                   newest_version=newest["version"],
                   schema=url_for(".template_schema", name=key, _external=True)
                   if published else None,
                   versions=[_version_json(v) for v in versions])


@bp.post("/templates/<key>/publish")
def publish_template(key: str) -> Response | tuple[Response, int]:
    """Publish a template's newest version, or ``{"version": N}`` (administrators only)."""
    _require_admin()
    number = None
    if request.get_data(cache=True).strip():
        body = json_body()
        number = body.get("version")
        if number is not None and (isinstance(number, bool) or not isinstance(number, int)
                                   or not 1 <= number <= 2_147_483_647):
            abort(400, "version: give the number of a version of the template.")
    try:
        record = publish(key, number)
    except TemplateProblems as exc:
        return _template_problems(exc)
    return jsonify(_version_json(record))


@bp.get("/templates/<name>/schema")
def template_schema(name: str) -> Response:
    """The JSON Schema of the terms of a template's published version."""
    return jsonify(json_schema(spec_for(name)))


@bp.get("/letters")
def letters() -> Response:
    """List letters newest first; ``q`` searches titles, listed terms and signers (every
    word, from its start), ``status`` and ``template`` filter. ``page`` numbers the first
    pages; ``next`` is the cursor of the page after this one (pass it as ``after``). ``total``
    counts at most 1,000 letters: ``total_is_estimate`` is true when there are more."""
    status = request.args.get("status", "").strip()
    if status and status not in STATUS_VALUES:
        abort(400, f"status must be one of {', '.join(STATUS_VALUES)}.")
    per_page = query_number("per_page", 25, maximum=MAX_PER_PAGE)
    page_number = query_number("page", 1, maximum=max(1, COUNT_LIMIT // per_page))
    template = request.args.get("template", "").strip()[:64]
    with get_db().read() as session:
        try:
            page = list_letters(session, q=request.args.get("q", "")[:200], status=status,
                                template=template, page=page_number, per_page=per_page,
                                after=request.args.get("after") or None)
        except PageCursorError as exc:
            abort(400, str(exc))
        titles = template_titles(session)
        rows = [letter_summary(letter, titles) for letter in page.letters]
        progress = signature_progress(session, [row["id"] for row in rows])
    for row in rows:
        row["signatures"] = progress.get(row["id"])
    return jsonify(letters=[_summary_json(row) for row in rows], total=page.total,
                   total_is_estimate=page.more, page=page.page, per_page=page.per_page,
                   pages=page.pages, next=page.next_cursor)


@bp.post("/letters")
def create() -> tuple[Response, int, dict[str, str]] | tuple[Response, int]:
    """Create a letter from ``{"template": ..., "terms": {...}}``; its PDF starts at once."""
    body = json_body()
    template = body.get("template")
    names = ", ".join(spec.name for spec in published_templates())
    if not isinstance(template, str) or not template.strip():
        return _invalid({"template": f"is required: the name of a template, e.g. {names}"})
    try:
        with get_db().transaction() as session:
            user = session.get(User, g.user.id)
            letter = create_letter(session, template.strip(), _terms_of(body), user,
                                   template_dir=_template_dir(), **_client())
            letter_id = letter.id
            queue_pending_pdfs(session, letter_id)  # its PDF is made once this commits
    except NotFoundError:
        return _invalid({"template": f"there is no template named {template.strip()[:64]!r}; "
                                     f"use one of {names}"})
    except StateError as exc:  # a draft template: 409, saying it is not published
        return jsonify(error=str(exc), code=exc.code, errors={"template": str(exc)}), 409
    except TermsError as exc:
        return _invalid(exc.errors)
    location = url_for(".get_letter", letter_id=letter_id, _external=True)
    return jsonify(_letter_json(letter_id)), 201, {"Location": location}


@bp.get("/letters/<int:letter_id>")
def get_letter(letter_id: int) -> Response:
    """A letter: its status, current terms, versions and their documents."""
    return jsonify(_letter_json(letter_id))


@bp.put("/letters/<int:letter_id>/terms")
def put_terms(letter_id: int) -> Response | tuple[Response, int]:
    """Replace a letter's terms with ``{"terms": {...}}``: a new version, unless unchanged."""
    body = json_body()
    with get_db().transaction() as session:
        letter = letter_detail(session, letter_id, with_events=False)
    spec = letter["spec"]  # the schema of the template version the letter was made from
    try:
        raw = _terms_of(body)
        unchanged = terms_to_json(spec, validate_terms(spec, raw)) == letter["version"]["terms"]
        if unchanged:
            return jsonify(_letter_json(letter_id))
        with get_db().transaction() as session:
            user = session.get(User, g.user.id)
            revise_terms(session, letter_id, raw, user, template_dir=_template_dir(),
                         **_client())
            queue_pending_pdfs(session, letter_id)  # made once this commits
    except TermsError as exc:
        return _invalid(exc.errors)
    return jsonify(_letter_json(letter_id))


@bp.get("/letters/<int:letter_id>/document.<any(pdf, docx):extension>")
def letter_document(letter_id: int, extension: str) -> Response:
    """Download the newest version's .docx or PDF, or ``?version=N``'s; waits for a PDF."""
    number = query_number("version")
    with get_db().transaction() as session:
        document, _ = find_document(session, letter_id, number, f"letter_{extension}")
        document_id = document.id
    document = get_documents().wait(document_id)  # made by a background job
    assert document.blob_sha256 is not None
    return send_document(load_blob(document.blob_sha256), filename=document.filename,
                         media_type=document.media_type, sha256=document.blob_sha256)


def _template_dir() -> Any:
    return current_app.config["DOCX_TEMPLATE_DIR"]
