"""The letters pages: table, new letter, edit terms, letter page, downloads, page pictures.

Each view parses the request, calls one domain function with plain values inside a short
transaction, and renders after the transaction has ended.
"""

from __future__ import annotations

from typing import Any

from flask import (
    abort,
    current_app,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from werkzeug.wrappers import Response

from workflow.errors import StateError, TermsError
from workflow.letters import (
    COUNT_LIMIT,
    PageCursorError,
    create_letter,
    list_letters,
    queue_pending_pdfs,
    retry_document,
    revise_terms,
)
from workflow.models import User
from workflow.schema import sample_terms, terms_to_json, validate_terms
from workflow.states import LetterStatus

from ..database import get_db
from ..documents import get_documents
from ..downloads import send_document
from ..errors import answers_json
from ..execution import envelope_record, signature_progress
from ..jobs import no_worker_note
from ..numbers import query_number
from ..previews import executed_preview_sha, get_previews, send_page_picture
from . import bp
from .display import terms_sections
from .execution import can_send, issued_links
from .forms import SendForm, TermsForm
from .records import (
    find_document,
    letter_detail,
    letter_summary,
    load_blob,
    published_templates,
    spec_for,
    template_titles,
)

STATUS_CHOICES = [(s.value, s.label) for s in LetterStatus]
STATUS_VALUES = frozenset(s.value for s in LetterStatus)


def _client() -> dict[str, str | None]:
    return {"ip": request.remote_addr, "user_agent": request.user_agent.string or None}


@bp.route("/")
def home() -> Response:
    """Send visitors to the letters table."""
    return redirect(url_for(".index"))


@bp.route("/letters")
def index() -> str:
    """The table of letters: newest first, searchable by title, listed terms and signers,
    filtered by status and template; each row shows its own template's listed terms.

    The first pages are numbered (``page``); later ones follow the cursor of the page before
    (``after``). A read-only transaction: the list never waits for a writer."""
    q = request.args.get("q", "").strip()[:200]
    status = request.args.get("status", "").strip()
    if status and status not in STATUS_VALUES:
        abort(400, f"There is no letter status {status[:40]!r}; choose one from the list.")
    template = request.args.get("template", "").strip()[:64]
    per_page = current_app.config["LETTERS_PER_PAGE"]
    page_number = query_number("page", 1, maximum=max(1, COUNT_LIMIT // per_page))
    after = request.args.get("after") or None
    with get_db().read() as session:
        titles = template_titles(session)
        if template and template not in titles:
            abort(400, f"There is no template {template!r}; choose one from the list.")
        try:
            page = list_letters(session, q=q, status=status, template=template,
                                page=page_number, per_page=per_page, after=after)
        except PageCursorError as exc:
            abort(400, str(exc))
        letters = [letter_summary(letter, titles) for letter in page.letters]
        progress = signature_progress(session, [letter["id"] for letter in letters])
    for letter in letters:
        letter["signatures"] = progress.get(letter["id"])
    return render_template("letters/index.html", letters=letters, page=page, q=q,
                           status=status, status_choices=STATUS_CHOICES, template=template,
                           template_choices=sorted(titles.items(), key=lambda t: t[1].lower()))


def _render_form(form: TermsForm, *, letter: dict[str, Any] | None = None,
                 status: int = 200) -> tuple[str, int]:
    return render_template("letters/form.html", form=form, spec=form.spec, letter=letter,
                           sections=form.sections(), error_list=form.error_list()), status


@bp.route("/letters/new", methods=["GET", "POST"])
def new_letter() -> Response | str | tuple[str, int]:
    """The terms form for a new letter; saving it creates the letter and its documents."""
    name = request.values.get("template", "").strip()
    if not name:
        specs = published_templates()
        if len(specs) != 1:
            return render_template("letters/choose_template.html", templates=specs)
        name = specs[0].name
    spec = spec_for(name)  # 404 for an unknown template, 409 for one not published
    if request.method == "GET":
        if request.args.get("start") == "reference":
            return _render_form(TermsForm.from_terms(spec, sample_terms(spec)))
        return _render_form(TermsForm.blank(spec))
    form = TermsForm.from_request(spec, request.form)
    if form.action != "save":
        return _render_form(form)
    try:
        with get_db().transaction() as session:
            user = session.get(User, g.user.id)
            letter = create_letter(session, spec.name, form.raw_terms(), user,
                                   template_dir=current_app.config["DOCX_TEMPLATE_DIR"],
                                   **_client())
            letter_id = letter.id
            queue_pending_pdfs(session, letter_id)  # its PDF is made once this commits
    except TermsError as exc:
        form.errors = exc.errors
        return _render_form(form, status=422)
    flash("Letter created. Its .docx is ready and its PDF is being generated.", "success")
    return redirect(url_for(".show", letter_id=letter_id))


@bp.route("/letters/<int:letter_id>/edit", methods=["GET", "POST"])
def edit(letter_id: int) -> Response | str | tuple[str, int]:
    """The terms form filled with a letter's terms; saving it makes a new version."""
    with get_db().transaction() as session:
        letter = letter_detail(session, letter_id, with_events=False)
    if not letter["editable"]:
        flash(f"This letter is {letter['status_label'].lower()}; its terms cannot be changed "
              "now.", "error")
        return redirect(url_for(".show", letter_id=letter_id))
    spec = letter["spec"]  # the letter keeps the template version it was made from
    if request.method == "GET":
        if request.args.get("start") == "reference":
            return _render_form(TermsForm.from_terms(spec, sample_terms(spec)), letter=letter)
        return _render_form(TermsForm.from_terms(spec, letter["version"]["terms"]),
                            letter=letter)
    form = TermsForm.from_request(spec, request.form)
    if form.action != "save":
        return _render_form(form, letter=letter)
    raw = form.raw_terms()
    try:
        unchanged = terms_to_json(spec, validate_terms(spec, raw)) == letter["version"]["terms"]
        if not unchanged:
            with get_db().transaction() as session:
                user = session.get(User, g.user.id)
                version = revise_terms(session, letter_id, raw, user,
                                       template_dir=current_app.config["DOCX_TEMPLATE_DIR"],
                                       **_client())
                number = version.number
                queue_pending_pdfs(session, letter_id)  # made once this commits
    except TermsError as exc:
        form.errors = exc.errors
        return _render_form(form, letter=letter, status=422)
    except StateError as exc:
        flash(str(exc), "error")
        return redirect(url_for(".show", letter_id=letter_id))
    if unchanged:
        flash(f"The terms are unchanged, so version {letter['current_version']} stays the "
              "current one.", "info")
        return redirect(url_for(".show", letter_id=letter_id))
    flash(f"Version {number} saved. Its PDF is being generated; earlier versions stay "
          "available below.", "success")
    return redirect(url_for(".show", letter_id=letter_id))


@bp.route("/letters/<int:letter_id>")
def show(letter_id: int) -> tuple[str, int]:
    """The letter page: terms as they read, pages, versions and their files, signatures,
    events."""
    return render_letter(letter_id, query_number("version"))


def render_letter(letter_id: int, number: int | None = None, *,
                  send_form: SendForm | None = None, upload_error: dict[str, Any] | None = None,
                  status: int = 200) -> tuple[str, int]:
    """Render the letter page; ``send_form`` shows the signing form as posted, with errors;
    ``upload_error`` (counterpart_id, message, signed_on) shows a refused paper upload by its
    signer's upload control."""
    with get_db().transaction() as session:
        letter = letter_detail(session, letter_id, number)
        envelope = envelope_record(session, letter_id)
    version = letter["version"]
    spec = letter["spec"]
    pdf = version["documents"].get("letter_pdf")
    pages: list[tuple[int, int, int]] = []
    # Once executed, the current version's pictures are the executed PDF's pages.
    executed_sha = executed_preview_sha(envelope, version)
    if executed_sha or (pdf and pdf["status"] == "ready" and pdf["sha256"]):
        sha = executed_sha or pdf["sha256"]
        sizes = get_previews().page_sizes(sha, lambda: load_blob(sha))
        pages = [(n, w, h) for n, (w, h) in enumerate(sizes, start=1)]
    pending = any(d["status"] in ("pending", "generating")
                  for v in letter["versions"] for d in v["documents"].values())
    worker_note = no_worker_note(current_app.config) if pending else None
    if can_send(letter, version):
        send_form = send_form or SendForm.defaults(spec, version["terms"])
        send_form.roles = send_form.roles or SendForm.party_roles(spec)
    else:
        send_form = None
    return render_template("letters/show.html", letter=letter, version=version, pdf=pdf,
                           pages=pages, executed_pages=executed_sha is not None,
                           pending=pending, worker_note=worker_note,
                           terms=terms_sections(spec, version["terms"]),
                           envelope=envelope, send_form=send_form,
                           role_labels={p.role: p.label for p in spec.parties},
                           upload_error=upload_error,
                           issued=issued_links(letter_id)), status


@bp.route("/letters/<int:letter_id>/status")
@answers_json
def status(letter_id: int) -> Response:
    """The letter's status and its documents' as JSON, for the page to follow generation."""
    with get_db().transaction() as session:
        letter = letter_detail(session, letter_id, with_events=False)
        envelope = envelope_record(session, letter_id)
    documents = [{"version": v["number"], "kind": d["kind"], "status": d["status"]}
                 for v in letter["versions"] for d in v["documents"].values()]
    pending = any(d["status"] in ("pending", "generating") for d in documents)
    response = jsonify(
        letter_id=letter_id, status=letter["status"], status_label=letter["status_label"],
        current_version=letter["current_version"], documents=documents, pending=pending,
        worker_note=no_worker_note(current_app.config) if pending else None,
        signed=envelope["signed"] if envelope else None,
        signers=envelope["total"] if envelope else None,
        assembling=bool(envelope and envelope["assembling"]))
    return response


@bp.route("/letters/<int:letter_id>/versions/<int:number>/letter.<any(pdf, docx):extension>")
def download(letter_id: int, number: int, extension: str) -> Response:
    """Download one version's .docx or PDF (waiting for a PDF still being generated)."""
    kind = f"letter_{extension}"
    with get_db().transaction() as session:
        document, _ = find_document(session, letter_id, number, kind)
        document_id = document.id
    document = get_documents().wait(document_id)  # made by a background job
    assert document.blob_sha256 is not None
    return send_document(load_blob(document.blob_sha256), filename=document.filename,
                         media_type=document.media_type, sha256=document.blob_sha256)


@bp.route("/letters/<int:letter_id>/versions/<int:number>/pages/<int:page>.png")
def page_image(letter_id: int, number: int, page: int) -> Response:
    """A picture of one page of a version's PDF."""
    with get_db().transaction() as session:
        document, _ = find_document(session, letter_id, number, "letter_pdf")
        sha = document.blob_sha256 if document.status == "ready" else None
    if sha is None:
        abort(404, "This version's PDF is not ready yet.")
    png = get_previews().png(sha, page, lambda: load_blob(sha))
    if png is None:
        abort(404, f"The PDF has no page {page}.")
    return send_page_picture(png, etag=f"{sha}-{page}")


@bp.route("/letters/<int:letter_id>/executed/pages/<int:page>.png")
def executed_page_image(letter_id: int, page: int) -> Response:
    """A picture of one page of the letter's executed PDF (404 until there is one)."""
    with get_db().transaction() as session:
        envelope = envelope_record(session, letter_id)
    executed = envelope["executed"] if envelope else None
    sha = executed["sha256"] if executed else None
    if sha is None:
        abort(404, "This letter has no executed PDF.")
    png = get_previews().png(sha, page, lambda: load_blob(sha))
    if png is None:
        abort(404, f"The executed PDF has no page {page}.")
    return send_page_picture(png, etag=f"{sha}-{page}")


@bp.route("/letters/<int:letter_id>/versions/<int:number>/retry", methods=["POST"])
def retry(letter_id: int, number: int) -> Response:
    """Try again to generate a version's PDF after a failure."""
    with get_db().transaction() as session:
        document, _ = find_document(session, letter_id, number, "letter_pdf")
        # Its job is enqueued once this commits (in immediate mode it has run by the redirect).
        retried = retry_document(session, document.id)
    if retried:
        flash("Generating the PDF again.", "info")
    return redirect(url_for(".show", letter_id=letter_id, version=number))
