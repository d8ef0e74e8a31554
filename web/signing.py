"""The signers' pages: no account, the token in the link is the credential.

``/sign/<token>`` shows the letter's pages, the consent to sign electronically, and a typed or
drawn signature to adopt; it records the signer's first view. Once signed, the same link reads
for its lifetime: it shows what was signed and when, and gives the signer their signed
counterpart (``/sign/<token>/signed.pdf``) and, once every counterpart is signed, the executed
letter (``/sign/<token>/executed.pdf``); it never signs again. A link that no longer works
(expired, withdrawn, declined; used, when it tries to sign) answers 410 with a page saying why,
an unknown or altered one 404, and neither changes anything. Forms keep their CSRF token: the
page sets it in the signer's session cookie like any other.

When the sender asked for it, the link opens only after a one-time code emailed to the signer
is entered (``/sign/<token>/code``, ``/sign/<token>/code/verify``): the browser that entered
it gets a signed cookie (:data:`IDENTITY_COOKIE`) holding a random token that the server
stores, hashed, with the code (:mod:`workflow.signer_identity`). Until then every part of the
link (pages, pictures, the PDF, signing, declining, copies) answers with the code page.
"""

from __future__ import annotations

from typing import Any

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    send_file,
    url_for,
)
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response

from workflow.db import is_reading_only
from workflow.envelopes import (
    SignerCopy,
    SigningView,
    decline_counterpart,
    envelope_for_token,
    link_shows_letter,
    party_label,
    readable_link,
    record_signature,
    signer_document,
    view_signing,
)
from workflow.errors import CounterpartError, IdentityError, LinkError, NotFoundError
from workflow.letters import blob_bytes
from workflow.mail import send_mail, signer_code_mail
from workflow.models import Document, Letter, utcnow
from workflow.pdfs import HANDWRITING_FONT, signing_field
from workflow.signer_identity import (
    CODE_LIFETIME,
    VERIFIED_LIFETIME,
    CodeCheck,
    issue_code,
    masked_email,
    record_code_mail,
    require_identity,
    verify_code,
    waiting_code,
)
from workflow.states import CounterpartStatus, LetterStatus

from .auth import public, secret_key
from .database import get_db
from .downloads import require_post, send_document
from .execution import (
    letter_title,
    prepare_signed_copy,
    signer_actor,
    smtp_settings,
)
from .previews import get_previews, send_page_picture

__all__ = ["bp", "CONSENT_DISCLOSURE", "signing_summary", "page_urls", "open_link_document",
           "copy_urls", "send_signer_copy", "identity_tokens", "remember_identity",
           "send_identity_code", "check_identity_code", "IDENTITY_COOKIE"]

bp = Blueprint("signing", __name__)

# The disclosure a signer agrees to before signing electronically (ESIGN Act, 15 U.S.C. 7001(c);
# UETA section 5): what they consent to, how to get paper instead or withdraw, what they need.
CONSENT_DISCLOSURE = (
    "You agree to receive this letter as an electronic record and to sign it with an electronic "
    "signature, which has the same effect as your handwritten signature on paper.",
    "You may instead ask the sender for a paper copy and sign it on paper, at no charge. You "
    "may withdraw this consent at any time before you sign by declining below; declining "
    "stops the electronic signing of this letter.",
    "You need a web browser to read and sign, and a PDF reader to keep a copy: download the "
    "letter from this page. After you sign, this link gives you your signed counterpart, and "
    "the executed letter once everyone has signed, until the link expires.",
    "When you sign, the time, your IP address and your browser are recorded with your "
    "signature in a certificate attached to the executed letter.",
)

LINK_TITLES = {
    "expired": "This link has expired",
    "voided": "This letter was withdrawn",
    "signed": "This counterpart is already signed",
    "declined": "This letter was declined",
    "waiting": "Please wait for the earlier signers",
}


@bp.errorhandler(LinkError)
def _link_error(error: LinkError) -> tuple[str, int]:
    code = 409 if error.reason == "waiting" else 410
    token = (request.view_args or {}).get("token")
    return render_template("signing/unavailable.html", title=LINK_TITLES.get(
        error.reason, "This link no longer works"), message=str(error),
        reason=error.reason, token=token, public_page=True), code


# --- the one-time code that opens a link --------------------------------------------------

IDENTITY_COOKIE = "counterpart_signer"
_IDENTITY_SALT = "signer-identity"
_KEPT_IDENTITIES = 10


def _identity_serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=_IDENTITY_SALT)


def identity_tokens() -> list[str]:
    """The browser tokens this browser's signed cookie holds (one per confirmed link)."""
    raw = request.cookies.get(IDENTITY_COOKIE)
    if not raw or len(raw) > 4000:
        return []
    try:
        tokens = _identity_serializer().loads(
            raw, max_age=int(VERIFIED_LIFETIME.total_seconds()))
    except BadSignature:
        return []
    return [t for t in tokens if isinstance(t, str)][:_KEPT_IDENTITIES] \
        if isinstance(tokens, list) else []


def remember_identity(response: Response, browser_token: str) -> Response:
    """Add a confirmed link's browser token to this browser's signed cookie."""
    tokens = [*identity_tokens(), browser_token][-_KEPT_IDENTITIES:]
    response.set_cookie(IDENTITY_COOKIE, _identity_serializer().dumps(tokens),
                        max_age=int(VERIFIED_LIFETIME.total_seconds()), path="/",
                        secure=bool(current_app.config.get("SESSION_COOKIE_SECURE")
                                    or request.is_secure),
                        httponly=True, samesite="Lax")
    return response


def send_identity_code(token: str) -> tuple[bool, str]:
    """Email a new one-time code to the signer of a link that needs one; say whether the mail
    server took it, in a sentence. Raises IdentityError (``too_soon``) when asked too often,
    LinkError or NotFoundError for a link that no longer reads, StateError when the link
    needs no code."""
    actor = signer_actor()
    with get_db().transaction() as session:
        counterpart, envelope = readable_link(session, token)
        issued = issue_code(session, counterpart, envelope, key=secret_key())
        letter = session.get(Letter, envelope.letter_id)
        assert letter is not None
        mail = signer_code_mail(name=issued.name, email=issued.email, title=letter_title(letter),
                                code=issued.code,
                                minutes=int(CODE_LIFETIME.total_seconds() // 60))
    settings = smtp_settings()
    if settings is None:
        accepted, answer, at = False, "outgoing mail is not set up", None
    else:
        result = send_mail(settings, mail)
        accepted, answer, at = result.accepted, result.answer, result.at
    with get_db().transaction() as session:
        record_code_mail(session, issued.code_id, accepted=accepted, answer=answer,
                         ip=actor.ip, user_agent=actor.user_agent, at=at or utcnow())
    where = masked_email(issued.email)
    if accepted:
        return True, (f"A 6-digit code was sent to {where}. It works for "
                      f"{int(CODE_LIFETIME.total_seconds() // 60)} minutes.")
    return False, (f"The code could not be emailed to {where} just now; try again in a "
                   "minute, or ask the sender for help.")


def check_identity_code(token: str, code: Any) -> CodeCheck:
    """Check a code typed for a link (a wrong one uses up a try, and is recorded)."""
    actor = signer_actor()
    with get_db().transaction() as session:
        counterpart, _ = readable_link(session, token)
        return verify_code(session, counterpart, code, key=secret_key(), ip=actor.ip,
                           user_agent=actor.user_agent)


def _identity_page(token: str, *, status: int, error: str | None = None,
                   notice: str | None = None) -> tuple[str, int]:
    with get_db().transaction() as session:
        counterpart, envelope = readable_link(session, token)
        letter = session.get(Letter, envelope.letter_id)
        assert letter is not None
        waiting = waiting_code(session, counterpart) is not None
        page = {"name": counterpart.name, "title": letter_title(letter),
                "email": masked_email(counterpart.email), "waiting": waiting,
                "minutes": int(CODE_LIFETIME.total_seconds() // 60)}
    return render_template("signing/identity.html", token=token, page=page, error=error,
                           notice=notice, public_page=True), status


@bp.errorhandler(IdentityError)
def _identity_needed(error: IdentityError) -> tuple[str, int]:
    # The link itself opens on the code page; anything else of it is refused until then.
    token = (request.view_args or {}).get("token", "")
    opening = request.method == "GET" and request.endpoint in ("signing.sign", "signing.done")
    return _identity_page(token, status=200 if opening else 403,
                          error=None if opening else str(error))


@bp.post("/sign/<token>/code")
@public
def send_code(token: str) -> Response | tuple[str, int]:
    """Email a one-time code to the signer, then show the page to type it."""
    try:
        sent, message = send_identity_code(token)
    except IdentityError as exc:  # asked too often
        return _identity_page(token, status=429, error=str(exc))
    if not sent:
        return _identity_page(token, status=503, error=message)
    flash(message, "info")
    return redirect(url_for(".sign", token=token), code=303)


@bp.post("/sign/<token>/code/verify")
@public
def verify_identity(token: str) -> Response | tuple[str, int]:
    """Check the code; the right one opens the link in this browser."""
    check = check_identity_code(token, request.form.get("code", ""))
    if not check.ok:
        return _identity_page(token, status=401, error=check.message)
    assert check.browser_token is not None
    return remember_identity(redirect(url_for(".sign", token=token), code=303),
                             check.browser_token)


@bp.errorhandler(NotFoundError)
def _unknown_link(error: NotFoundError) -> tuple[str, int]:
    return render_template(
        "signing/unavailable.html", title="This signing link is not valid",
        message="Check that the whole link was copied from the message you received; if it "
                "still does not work, ask the sender for a new one.", reason="unknown",
        public_page=True), 404


def page_urls(token: str, count: int, *, endpoint: str = "signing.page_image",
              external: bool = False) -> list[str]:
    """Return the addresses of the page pictures a signing link may see."""
    return [url_for(endpoint, token=token, page=n, _external=external)
            for n in range(1, count + 1)]


def copy_urls(token: str, summary: dict[str, Any], *, api: bool = False
              ) -> dict[str, str | None]:
    """Return the addresses to POST for a signer's copies: ``signed_pdf`` and
    ``executed_pdf``, each None until it exists; the API's (full) ones when ``api``."""
    prefix = "api.signer_" if api else "signing."
    return {
        "signed_pdf": url_for(f"{prefix}signed_copy", token=token, _external=api)
        if summary["has_signed_copy"] else None,
        "executed_pdf": url_for(f"{prefix}executed_copy", token=token, _external=api)
        if summary["has_executed_copy"] else None,
    }


def _role_words(label: str) -> str:
    """Say in which capacity a party signs, from its label: "as the executive"."""
    return "as " + label[:1].lower() + label[1:]


def _signature_page(session: Session, sha: str, role: str) -> int | None:
    """The page (from 1) where this party signs, as the letter's signing field places it."""
    try:
        return signing_field(blob_bytes(session, sha), role).page_index + 1
    except CounterpartError:
        return None


def signing_summary(session: Session, view: SigningView) -> dict[str, Any]:
    """Copy what a signing page or the signer API shows out of a SigningView."""
    counterpart, envelope, letter = view.counterpart, view.envelope, view.letter
    document = session.get(Document, envelope.letter_pdf_id)
    assert document is not None and document.blob_sha256 is not None
    sha = document.blob_sha256
    sizes = get_previews().page_sizes(sha, lambda: blob_bytes(session, sha))
    others = [{"name": c.name, "signed": c.status == CounterpartStatus.SIGNED.value}
              for c in envelope.counterparts if c.id != counterpart.id]
    return {
        "title": letter_title(letter),
        "name": counterpart.name, "role": counterpart.role,
        "role_words": _role_words(party_label(session, counterpart)),
        "status": view.status,
        "status_label": CounterpartStatus(view.status).label,
        "expires_at": envelope.expires_at, "waiting_for": list(view.waiting_for),
        "can_sign": view.can_sign, "page_sizes": sizes, "letter_sha256": sha,
        "signature_page": _signature_page(session, sha, counterpart.role),
        "signed": view.signed, "method": counterpart.method,
        "signed_at": counterpart.signed_at, "time_zone": counterpart.time_zone,
        "others": others, "still_to_sign": [o["name"] for o in others if not o["signed"]],
        "fully_executed": letter.status == LetterStatus.FULLY_EXECUTED.value,
        "has_signed_copy": view.signed and counterpart.signed_document_id is not None,
        "has_executed_copy": view.signed and envelope.executed_document_id is not None,
    }


def open_link_document(token: str) -> tuple[str, str]:
    """Return the (SHA-256, file name) of the letter PDF behind a link the signer may read.

    Only a link that can be signed now shows the letter: a waiting signer's view is recorded
    when their turn comes, a signed one gets the signed copy instead, and a withdrawn,
    declined or expired link shows nothing.
    """
    with get_db().transaction() as session:
        counterpart, envelope = envelope_for_token(session, token)
        if not link_shows_letter(counterpart, envelope):
            abort(410, "This signing link cannot show the letter now; open the link itself to "
                       "see why.")
        require_identity(session, counterpart, identity_tokens())
        document = session.get(Document, envelope.letter_pdf_id)
        assert document is not None and document.blob_sha256 is not None
        return document.blob_sha256, document.filename


def _open(token: str) -> dict[str, Any]:
    """Open a signing link (recording the first view) and describe it.

    On a GET nothing is written: the first view is noted and written right after, in its own
    transaction (see :func:`workflow.envelopes.view_signing`)."""
    database = get_db()
    with database.transaction() as session:
        view = view_signing(session, token, signer_actor(), identity=identity_tokens(),
                            views=database.activity if is_reading_only() else None)
        return signing_summary(session, view)


def _render_sign_page(token: str, signer: dict[str, Any], *, error: str | None = None,
                      decline_error: str | None = None, form: dict[str, str] | None = None,
                      status: int = 200) -> tuple[str, int]:
    if signer["signed"]:
        return render_template("signing/signed.html", token=token, signer=signer,
                               copies=copy_urls(token, signer), public_page=True), status
    if signer["waiting_for"]:
        return render_template("signing/waiting.html", signer=signer, public_page=True), status
    return render_template(
        "signing/sign.html", token=token, signer=signer, disclosure=CONSENT_DISCLOSURE,
        pages=[(n, w, h) for n, (w, h) in enumerate(signer["page_sizes"], start=1)],
        # The letter's words beside its pictures, for screen readers and larger text.
        page_texts=get_previews().page_texts(signer["letter_sha256"],
                                             lambda: _blob(signer["letter_sha256"])),
        error=error,
        decline_error=decline_error,
        form=form or {"signature_type": "typed", "signature_text": signer["name"]},
        public_page=True), status


@bp.get("/sign/<token>")
@public
def sign(token: str) -> tuple[str, int]:
    """The signing page: the letter, the consent, and the signature to adopt; once signed,
    what was signed and the signer's copies."""
    return _render_sign_page(token, _open(token))


def _signature_from_form(form: Any) -> dict[str, str]:
    if form.get("signature_type") == "drawn":
        return {"type": "drawn", "png": form.get("signature_png", ""),
                "pixel_ratio": form.get("signature_pixel_ratio", "")}
    return {"type": "typed", "text": form.get("signature_text", "")}


@bp.post("/sign/<token>")
@public
def sign_submit(token: str) -> Response | tuple[str, int]:
    """Sign with the consent and signature of the form; on success, show the confirmation."""
    form = request.form
    try:
        # The browser's time zone (sign.js fills it in); without JavaScript, UTC.
        copy = prepare_signed_copy(token, consent=form.get("consent") == "yes",
                                   signature=_signature_from_form(form),
                                   time_zone=form.get("time_zone"), identity=identity_tokens())
        get_db().activity.flush(get_db())  # a first view noted on the page comes first
        with get_db().transaction() as session:
            # The last signature enqueues the assembly of the executed letter, to run once
            # this commits: the signer's page says it is being put together until it is.
            record_signature(session, token, copy, signer_actor(), identity=identity_tokens())
    except (LinkError, NotFoundError, IdentityError):
        raise
    except CounterpartError as exc:
        # Consent missing or the signature unusable: the page again, with what was chosen.
        kept = {"signature_type": form.get("signature_type", "typed"),
                "signature_text": form.get("signature_text", "")[:100],
                "consent": form.get("consent", "")}
        return _render_sign_page(token, _open(token), error=str(exc), form=kept, status=400)
    return redirect(url_for(".done", token=token), code=303)


@bp.post("/sign/<token>/decline")
@public
def decline(token: str) -> Response | tuple[str, int]:
    """Decline to sign, with a reason."""
    try:
        get_db().activity.flush(get_db())  # a first view noted on the page comes first
        with get_db().transaction() as session:
            decline_counterpart(session, token, reason=request.form.get("reason", ""),
                                actor=signer_actor(), identity=identity_tokens())
    except (LinkError, NotFoundError, IdentityError):
        raise
    except CounterpartError as exc:
        return _render_sign_page(token, _open(token), status=400, decline_error=str(exc))
    return redirect(url_for(".done", token=token), code=303)


@bp.get("/sign/<token>/done")
@public
def done(token: str) -> Response | tuple[str, int] | str:
    """What happened after signing (what was signed, and the copies) or declining."""
    with get_db().transaction() as session:
        counterpart, envelope = envelope_for_token(session, token)
        if counterpart.status == CounterpartStatus.SIGNED.value:
            signed = True
        elif counterpart.status == CounterpartStatus.DECLINED.value:
            signed = False
            letter = session.get(Letter, envelope.letter_id)
            assert letter is not None
            outcome = {"status": counterpart.status, "name": counterpart.name,
                       "title": letter_title(letter), "declined_at": counterpart.declined_at,
                       "time_zone": counterpart.time_zone}
        else:
            return redirect(url_for(".sign", token=token))
    if signed:
        return _render_sign_page(token, _open(token))
    return render_template("signing/done.html", outcome=outcome, public_page=True)


def send_signer_copy(token: str, which: SignerCopy) -> Response:
    """Answer with a signer's copy (``signed`` or ``executed``), recording the download."""
    require_post()  # recorded: see web/downloads.py
    with get_db().transaction() as session:
        document = signer_document(session, token, which, signer_actor(),
                                   identity=identity_tokens())
        assert document.blob_sha256 is not None
        data = blob_bytes(session, document.blob_sha256)
        filename, sha = document.filename, document.blob_sha256
    return send_document(data, filename=filename, media_type="application/pdf", sha256=sha)


# Recorded downloads: the page's buttons POST (a GET answers 405 saying so), see downloads.py.
@bp.route("/sign/<token>/signed.pdf", methods=["GET", "POST"])
@public
def signed_copy(token: str) -> Response:
    """The signer's own signed counterpart, for the holder of their link once signed."""
    return send_signer_copy(token, "signed")


@bp.route("/sign/<token>/executed.pdf", methods=["GET", "POST"])
@public
def executed_copy(token: str) -> Response:
    """The sealed executed letter, for a signer's link once every counterpart is signed."""
    return send_signer_copy(token, "executed")


@bp.get("/sign/<token>/pages/<int:page>.png")
@public
def page_image(token: str, page: int) -> Response:
    """A colour picture of one page of the letter, for the holder of an open link."""
    sha, _ = open_link_document(token)
    png = get_previews().png(sha, page, lambda: _blob(sha), color=True)
    if png is None:
        abort(404, f"The letter has no page {page}.")
    return send_page_picture(png)


@bp.get("/sign/<token>/letter.pdf")
@public
def letter_pdf(token: str) -> Response:
    """The letter as PDF, to read, keep or print and sign on paper."""
    sha, filename = open_link_document(token)
    return send_document(_blob(sha), filename=filename, media_type="application/pdf",
                         sha256=sha)


@bp.get("/fonts/signature.ttf")
@public
def signature_font() -> Response:
    """The handwriting font of typed signatures (Dancing Script, SIL Open Font License)."""
    response = send_file(HANDWRITING_FONT, mimetype="font/ttf", max_age=86400, conditional=True)
    response.headers["Cache-Control"] = "public, max-age=86400"
    return response


def _blob(sha: str) -> bytes:
    with get_db().transaction() as session:
        return blob_bytes(session, sha)
