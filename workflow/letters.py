"""Letters and their versions and documents: create, revise, generate, list, read.

A letter's terms are never changed in place: editing makes a new version, and every version
keeps its own .docx and PDF. The .docx is rendered in the same transaction that stores the
terms; the PDF is a ``pending`` document made by a background job, :func:`generate_pdf_job`,
which :func:`queue_pending_pdfs` enqueues once that transaction commits. The job may run twice
(a retry, or a worker's job taken over after it died): its bytes are stored only while the
document is still waiting for them, so a second run changes nothing. Requests never convert a
letter PDF: one that must wait for it polls the database (:func:`wait_for_document`).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import logging
import re
import time
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from anyascii import anyascii
from sqlalchemy import and_, func, literal, or_, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, object_session

from . import jobs
from .audit import record_event
from .convert import PdfConverter
from .db import Database, rowcount
from .errors import (
    CounterpartError,
    NotFoundError,
    NotReadyError,
    StateError,
    TemplateError,
)
from .models import Blob, Document, Letter, LetterVersion, TemplateVersion, User, utcnow
from .render import render_docx
from .schema import (
    DEFAULT_TEMPLATE_DIR,
    TemplateSpec,
    document_names,
    load_template,
    terms_to_json,
    validate_terms,
)
from .states import LetterStatus, transition
from .text import file_slug, search_text

if TYPE_CHECKING:
    from huey.api import Task

__all__ = [
    "DOCX_TYPE", "PDF_TYPE", "LetterPage", "store_blob", "blob_bytes", "create_letter",
    "revise_terms", "get_letter", "get_version", "list_letters", "document_bytes",
    "generate_document", "wait_for_document", "pending_documents", "version_terms",
    "latest_document", "retry_document", "refresh_search_text", "queue_pending_pdfs",
    "version_template", "render_version", "version_spec", "version_template_version",
    "generate_pdf_job", "resume_pending_pdfs", "PDF_RETRIES", "WAITING",
    "RESUME_PENDING_AFTER", "COUNT_LIMIT", "PageCursorError", "encode_cursor", "decode_cursor",
]

log = logging.getLogger(__name__)
DOCX_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
PDF_TYPE = "application/pdf"
# LibreOffice failures are retried this many times (after 5, 15 and 45 seconds), then the
# document is marked failed; the letter page offers "Retry".
PDF_RETRIES = 3
PDF_RETRY_DELAY_SECONDS = 5.0
PDF_RETRY_BACKOFF = 3.0
# A PDF still waiting this long after its job was last enqueued or started is enqueued again
# by :func:`resume_pending_pdfs`: the safety net for an enqueue lost between the commit and the
# queue (see there). Longer than every retry of a job together.
RESUME_PENDING_AFTER = dt.timedelta(minutes=10)
EDIT_LOCKED = {LetterStatus.OUT_FOR_SIGNATURE, LetterStatus.PARTIALLY_EXECUTED,
               LetterStatus.FULLY_EXECUTED, LetterStatus.DECLINED}


def store_blob(session: Session, data: bytes) -> str:
    """Store bytes once under their SHA-256 and return it.

    Two transactions may store the same bytes at once (two signers adopting the same typed
    signature): the insert skips a row that already exists instead of failing on it.
    """
    digest = hashlib.sha256(data).hexdigest()
    if session.get(Blob, digest) is None:
        dialect = session.get_bind().dialect.name
        insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
        session.execute(insert(Blob).values(sha256=digest, size=len(data), data=data,
                                            created_at=utcnow())
                        .on_conflict_do_nothing(index_elements=["sha256"]))
    return digest


def blob_bytes(session: Session, sha256: str) -> bytes:
    """Return stored bytes, checking them against their SHA-256."""
    blob = session.get(Blob, sha256)
    if blob is None:
        raise NotFoundError(f"The stored file {sha256[:12]}… is missing.")
    data = bytes(blob.data)
    if hashlib.sha256(data).hexdigest() != sha256:
        raise CounterpartError(f"The stored file {sha256[:12]}… is damaged.")
    return data


_slug = file_slug


def _filename(letter: Letter, number: int, suffix: str) -> str:
    return f"{letter.file_stem}-v{number}{suffix}"


def _add_version(session: Session, letter: Letter, spec: TemplateSpec,
                 template_version: TemplateVersion, terms: dict[str, Any],
                 user: User | None) -> LetterVersion:
    from .library import template_docx

    number = (session.scalar(select(func.max(LetterVersion.number))
                             .where(LetterVersion.letter_id == letter.id)) or 0) + 1
    # The letter is rendered from the template version's own bytes now, and again from the
    # same bytes when it is signed, whatever later versions of the template say.
    template = template_docx(session, template_version)
    version = LetterVersion(
        letter_id=letter.id, number=number, terms=terms_to_json(spec, terms),
        template_name=spec.name, template_sha256=template_version.docx_sha256,
        template_version_id=template_version.id, created_by_id=user.id if user else None,
    )
    session.add(version)
    session.flush()
    # The file names below start with the letter's file stem, so name the letter first.
    names = document_names(spec, terms)
    letter.title = names.title
    letter.file_stem = names.file_stem
    letter.list_values = [{"term": term, "label": label, "value": value}
                          for term, label, value in names.columns]
    refresh_search_text(session, letter)
    docx = render_docx(spec, terms, template=template)
    session.add(Document(
        letter_id=letter.id, version_id=version.id, kind="letter_docx", status="ready",
        blob_sha256=store_blob(session, docx), size=len(docx), media_type=DOCX_TYPE,
        filename=_filename(letter, number, ".docx")))
    session.add(Document(
        letter_id=letter.id, version_id=version.id, kind="letter_pdf", status="pending",
        media_type=PDF_TYPE, filename=_filename(letter, number, ".pdf")))
    letter.current_version = number
    letter.updated_at = utcnow()
    session.flush()
    return version


def version_template_version(session: Session, version: LetterVersion,
                             template_dir: Path = DEFAULT_TEMPLATE_DIR) -> TemplateVersion:
    """Return the template version a letter version was made from, or raise TemplateError.

    A version made before the template library names none; the library's version with the
    same .docx stands for it, else the template's newest published version (for its schema).
    """
    from .library import letter_template_version, published_version

    found = letter_template_version(session, version)
    if found is not None:
        return found
    try:
        return published_version(session, version.template_name, template_dir=template_dir)
    except CounterpartError as exc:
        raise TemplateError(f"Version {version.number} of letter {version.letter_id} was made "
                            f"from the template {version.template_name!r}, which the library "
                            f"no longer has ({exc})") from exc


def version_spec(session: Session, version: LetterVersion,
                 template_dir: Path = DEFAULT_TEMPLATE_DIR) -> TemplateSpec:
    """Return the schema a letter version's terms follow: its template version's."""
    from .library import template_spec

    return template_spec(version_template_version(session, version, template_dir))


def version_template(session: Session, version: LetterVersion,
                     template_dir: Path = DEFAULT_TEMPLATE_DIR) -> bytes:
    """Return the exact template .docx a version was made from (its ``template_sha256``).

    It is kept with the version; a version made before templates were kept falls back to the
    template file, only if the file is still byte for byte the same. Else TemplateError.
    """
    if session.get(Blob, version.template_sha256) is not None:
        return blob_bytes(session, version.template_sha256)
    spec = load_template(version.template_name, template_dir)
    data = spec.docx_path.read_bytes()
    if hashlib.sha256(data).hexdigest() != version.template_sha256:
        raise TemplateError(
            f"{spec.docx_path.name}: version {version.number} of this letter was made from a "
            f"template with SHA-256 {version.template_sha256[:12]}…, which is no longer kept "
            f"and differs from the file now in place; the letter cannot be rendered again "
            f"exactly as it was sent.")
    return data


def render_version(session: Session, version: LetterVersion,
                   signing: Mapping[str, dt.date] | None = None, *,
                   template_dir: Path = DEFAULT_TEMPLATE_DIR) -> bytes:
    """Render a version's .docx again from its own template, with signers' dates filled in.

    ``signing`` maps a role to its signer's date of signing (see :func:`render.date_signed`).
    """
    spec = version_spec(session, version, template_dir)
    return render_docx(spec, validate_terms(spec, version.terms), signing=signing,
                       template=version_template(session, version, template_dir))


def refresh_search_text(session: Session, letter: Letter) -> None:
    """Recompute what a letter is found by: its title, listed terms and every signer's name."""
    from .models import Counterpart, Envelope

    signers = session.scalars(select(Counterpart.name).join(Envelope).where(
        Envelope.letter_id == letter.id)) if letter.id is not None else []
    listed = [str(column.get("value", "")) for column in letter.list_values or []]
    letter.search_text = search_text([letter.title, *listed, *signers])


def create_letter(session: Session, template: str, raw_terms: Any, user: User | None, *,
                  template_dir: Path = DEFAULT_TEMPLATE_DIR, ip: str | None = None,
                  user_agent: str | None = None) -> Letter:
    """Validate terms and create a letter from a template's newest published version.

    Raises TermsError naming every bad field, NotFoundError for an unknown template, and
    StateError for a template not yet published; nothing is stored then.
    """
    from .library import published_version, template_spec

    template_version = published_version(session, template, template_dir=template_dir)
    spec = template_spec(template_version)
    terms = validate_terms(spec, raw_terms)
    letter = Letter(template=spec.name, status=LetterStatus.DRAFT.value,
                    created_by_id=user.id if user else None)
    session.add(letter)
    session.flush()
    version = _add_version(session, letter, spec, template_version, terms, user)
    record_event(session, letter.id, "created", actor=user.email if user else "system",
                 ip=ip, user_agent=user_agent,
                 detail={"version": version.number, "template": spec.name,
                         "template_version": template_version.number,
                         "template_sha256": version.template_sha256})
    return letter


def revise_terms(session: Session, letter_id: int, raw_terms: Any, user: User | None, *,
                 template_dir: Path = DEFAULT_TEMPLATE_DIR, ip: str | None = None,
                 user_agent: str | None = None) -> LetterVersion:
    """Store changed terms as a new version; refused while the letter is out for signature."""
    letter = get_letter(session, letter_id, for_update=True)
    status = LetterStatus(letter.status)
    if status in EDIT_LOCKED:
        if status == LetterStatus.FULLY_EXECUTED:
            raise StateError("This letter is fully executed; its terms can no longer change.")
        raise StateError(f"This letter is {status.label.lower()}; void its envelope before "
                         "changing the terms.")
    # A new version keeps the template version the letter was made from.
    template_version = version_template_version(session, get_version(session, letter),
                                                template_dir)
    from .library import template_spec

    spec = template_spec(template_version)
    terms = validate_terms(spec, raw_terms)
    letter.status = transition(status, LetterStatus.DRAFT).value
    version = _add_version(session, letter, spec, template_version, terms, user)
    record_event(session, letter.id, "edited", actor=user.email if user else "system",
                 ip=ip, user_agent=user_agent, detail={"version": version.number})
    return version


def get_letter(session: Session, letter_id: int, *, for_update: bool = False) -> Letter:
    """Return a letter or raise NotFoundError."""
    query = select(Letter).where(Letter.id == letter_id)
    if for_update:
        query = query.with_for_update()
    letter = session.scalar(query)
    if letter is None:
        raise NotFoundError(f"There is no letter {letter_id}.")
    return letter


def get_version(session: Session, letter: Letter, number: int | None = None) -> LetterVersion:
    """Return one version of a letter (the newest by default) or raise NotFoundError."""
    number = letter.current_version if number is None else number
    version = session.scalar(select(LetterVersion).where(
        LetterVersion.letter_id == letter.id, LetterVersion.number == number))
    if version is None:
        raise NotFoundError(f"Letter {letter.id} has no version {number}.")
    return version


def version_terms(version: LetterVersion, template_dir: Path = DEFAULT_TEMPLATE_DIR
                  ) -> dict[str, Any]:
    """Return a version's terms as typed values (by its template version's schema)."""
    session = object_session(version)
    assert session is not None, "the version must belong to a session"
    return validate_terms(version_spec(session, version, template_dir), version.terms)


def latest_document(session: Session, version: LetterVersion, kind: str) -> Document:
    """Return a version's document of one kind or raise NotFoundError."""
    document = session.scalar(select(Document).where(
        Document.version_id == version.id, Document.kind == kind).order_by(Document.id.desc()))
    if document is None:
        raise NotFoundError(f"Version {version.number} has no {kind.replace('_', ' ')}.")
    return document


COUNT_LIMIT = 1000
"""Lists count matching letters up to this many; beyond it they say "more than 1,000"."""


class PageCursorError(CounterpartError):
    """An ``after`` cursor of the letters list is not one the list gave out."""


@dataclass
class LetterPage:
    """One page of the letters list.

    ``total`` counts the matching letters up to :data:`COUNT_LIMIT`; ``more`` is True when
    there are more than that (the count stopped there). ``page`` is the page number when the
    page was asked for by number, None when by an ``after`` cursor. ``next_cursor`` is the
    opaque cursor of the page after this one, None on the last page.
    """

    letters: list[Letter]
    total: int
    page: int | None
    per_page: int
    more: bool = False
    next_cursor: str | None = None

    @property
    def pages(self) -> int:
        """How many pages the counted letters fill (at least 1)."""
        return max(1, -(-self.total // self.per_page))


def encode_cursor(letter: Letter) -> str:
    """Return the opaque cursor that lists the letters after ``letter`` in list order."""
    raw = f"{_as_utc(letter.updated_at).isoformat()}|{letter.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[dt.datetime, int]:
    """Return the (updated_at, id) a cursor stands for; PageCursorError naming ``after`` if
    it is not one :func:`encode_cursor` made."""
    problem = PageCursorError("after is not a cursor this list gave out; start again from "
                              "the first page.")
    if not cursor or len(cursor) > 200:
        raise problem
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        when, _, letter_id = raw.partition("|")
        updated_at = dt.datetime.fromisoformat(when)
        number = int(letter_id)
    except (ValueError, UnicodeDecodeError) as exc:
        raise problem from exc
    if updated_at.tzinfo is None or not 0 < number < 2**63 or not letter_id.isdigit():
        raise problem
    return updated_at.astimezone(dt.UTC), number


def _as_utc(when: dt.datetime) -> dt.datetime:
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)


_WORD = re.compile(r"\w+", re.UNICODE)


def _search_words(q: str) -> list[list[str]]:
    """Split a query into words, each with its spellings (as typed and in ASCII), folded."""
    words = []
    # Words as the text index sees them: punctuation separates them and alone is no word.
    for word in _WORD.findall(unicodedata.normalize("NFC", q).casefold()):
        spellings = [word, anyascii(word).casefold()]
        words.append([s for s in dict.fromkeys(spellings) if _WORD.search(s)])
    return words


def _fts_query(words: list[list[str]]) -> str:
    """An FTS5 query: every word (AND), each by any spelling (OR), as a prefix. Each spelling
    is an FTS5 string, so that the user's quotes, stars, NEAR or minus are plain text."""
    def spelling(text: str) -> str:
        return '"' + text.replace('"', '""') + '"*'

    return " AND ".join("(" + " OR ".join(spelling(s) for s in spellings) + ")"
                        for spellings in words)


SEARCH_WALK = 100
"""A search with many matches (SQLite) walks the list in its order, newest change first,
through at most this many letters per letter shown, keeping those its text index matched;
only when that window holds too few does it sort every match instead."""
SORT_AT_MOST = 200
"""A search matching at most this many letters sorts them all at once (on PostgreSQL, gathered
through the text index first); with more, SQLite walks the list (:data:`SEARCH_WALK`) and
PostgreSQL's planner walks its list-order index."""


def _text_matches(fts: str) -> Any:
    """The ids of the letters SQLite's FTS5 ``letter_search`` matches (a subquery)."""
    return text("SELECT rowid FROM letter_search WHERE letter_search MATCH :letter_search"
                ).bindparams(letter_search=fts)


def _like_condition(words: list[list[str]]) -> Any:
    """PostgreSQL: every word (AND) by any spelling (OR) as ``LIKE '%word%'`` on the folded
    text, which pg_trgm's index serves."""
    def like(spelling: str) -> Any:
        escaped = spelling.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return Letter.search_text.like(f"%{escaped}%", escape="\\")

    return and_(*(or_(*(like(s) for s in spellings)) for spellings in words))


_LIST_ORDER = (Letter.updated_at.desc(), Letter.id.desc())


def _count(session: Session, filters: list[Any], fts: str | None, *,
           searched: bool = False) -> int:
    """Count the matching letters, stopping at ``COUNT_LIMIT + 1``; ``fts`` is SQLite's
    text-index query, ``searched`` says the filters hold PostgreSQL's search. A search alone
    on SQLite is counted in its text index, reading no letter."""
    if fts is not None and not filters:
        return session.scalar(text(
            "SELECT count(*) FROM (SELECT rowid FROM letter_search WHERE letter_search "
            "MATCH :letter_search LIMIT :limit)"),
            {"letter_search": fts, "limit": COUNT_LIMIT + 1}) or 0
    conditions = [*filters, *([Letter.id.in_(_text_matches(fts))] if fts is not None else [])]
    if searched:
        # PostgreSQL: planned without the limit, the search goes through pg_trgm's index; with
        # it, the planner may scan every letter hoping to stop early, and a rare name never
        # lets it. The limit still stops reading the matches at COUNT_LIMIT + 1.
        found = select(Letter.id).where(*conditions).cte("found").prefix_with("MATERIALIZED")
        return session.scalar(select(func.count()).select_from(
            select(found.c.id).limit(COUNT_LIMIT + 1).subquery())) or 0
    return session.scalar(select(func.count()).select_from(
        select(Letter.id).where(*conditions).limit(COUNT_LIMIT + 1).subquery())) or 0


def _walk_matches(session: Session, conditions: list[Any], matches: Any, skip: int,
                  wanted: int) -> list[Letter] | None:
    """SQLite: the ``wanted`` letters after ``skip`` that the text index matched, in list
    order, looked for among the newest ``SEARCH_WALK`` letters per letter asked for only
    (walking the list-order index, which stops once enough are found, and reading only the
    rows it keeps). None when too few were found there: the caller sorts every match instead
    (a sparse search, or the end of the list)."""
    # The window's last letter bounds the walk (from its time on: a prefix of the list, ties
    # included); a list shorter than the window is walked whole.
    edge = (select(Letter.updated_at).where(*conditions).order_by(*_LIST_ORDER)
            .offset(SEARCH_WALK * (skip + wanted) - 1).limit(1).scalar_subquery())
    earliest = literal(dt.datetime(1, 1, 1, tzinfo=dt.UTC), Letter.updated_at.type)
    # "+ 0" keeps SQLite from looking the matches up one by one and sorting them all:
    # it walks the letters in list order and keeps those in the (once built) set of matches.
    found = list(session.scalars(
        select(Letter).where(*conditions, Letter.updated_at >= func.coalesce(edge, earliest),
                             (Letter.id + 0).in_(matches))
        .order_by(*_LIST_ORDER).offset(skip).limit(wanted)))
    return found if len(found) == wanted else None


def list_letters(session: Session, *, q: str = "", status: str = "", template: str = "",
                 page: int = 1, per_page: int = 25, after: str | None = None) -> LetterPage:
    """List letters newest change first (by updated_at, then id), filtered by a search
    (every word, from its start, in the title, listed terms or signers' names, whatever the
    accents or case), a status and a template.

    A page is asked for by number (``page``, for the first pages) or by the cursor of the
    page before it (``after``, any depth: the list resumes after that letter without
    counting or skipping rows, so a letter changed meanwhile is neither shown twice nor
    skipped). The count stops at :data:`COUNT_LIMIT`. Raises PageCursorError for a bad
    ``after``.

    On SQLite a search with many matches walks the list order and keeps the matches (see
    :data:`SEARCH_WALK`), so its cost follows the letters shown, not the letters matched.
    """
    filters: list[Any] = []
    if template:
        filters.append(Letter.template == template)
    if status:
        filters.append(Letter.status == LetterStatus(status).value)
    words = _search_words(q)
    sqlite = session.get_bind().dialect.name == "sqlite"
    fts = _fts_query(words) if words and sqlite else None
    if words and not sqlite:
        filters.append(_like_condition(words))
    counted = _count(session, filters, fts, searched=bool(words) and not sqlite)
    matches = _text_matches(fts) if fts is not None else None
    number: int | None = max(1, page)
    if after:
        updated_at, letter_id = decode_cursor(after)
        filters.append(tuple_(Letter.updated_at, Letter.id) <
                       tuple_(literal(updated_at, Letter.updated_at.type),
                              literal(letter_id, Letter.id.type)))
        number = None
    skip = (number - 1) * per_page if number is not None else 0
    rows: list[Letter] | None = None
    # Few matches are sorted at once; many are found by walking the list in its order.
    if matches is not None and counted > SORT_AT_MOST:
        rows = _walk_matches(session, filters, matches, skip, per_page + 1)
    if rows is None:
        conditions = [*filters, *([Letter.id.in_(matches)] if matches is not None else [])]
        ordered = select(Letter).where(*conditions).order_by(*_LIST_ORDER)
        if words and not sqlite and counted <= SORT_AT_MOST:
            # PostgreSQL guesses a thousand or so matches for any search, and would walk the
            # whole list for a rare name: few matches are gathered through pg_trgm's index
            # first and sorted, then the page's letters are read by id.
            found = (select(Letter.id, Letter.updated_at).where(*conditions)
                     .cte("found").prefix_with("MATERIALIZED"))
            ids = list(session.scalars(
                select(found.c.id).order_by(found.c.updated_at.desc(), found.c.id.desc())
                .offset(skip).limit(per_page + 1)))
            by_id = {letter.id: letter
                     for letter in session.scalars(select(Letter).where(Letter.id.in_(ids)))}
            rows = [by_id[letter_id] for letter_id in ids]
        else:
            if skip:
                ordered = ordered.offset(skip)
            rows = list(session.scalars(ordered.limit(per_page + 1)))
    next_cursor = encode_cursor(rows[per_page - 1]) if len(rows) > per_page else None
    return LetterPage(rows[:per_page], min(counted, COUNT_LIMIT), number, per_page,
                      more=counted > COUNT_LIMIT, next_cursor=next_cursor)


def document_bytes(session: Session, document: Document) -> bytes:
    """Return a ready document's bytes."""
    if document.status != "ready" or not document.blob_sha256:
        raise StateError(f"{document.filename} is not ready yet.")
    return blob_bytes(session, document.blob_sha256)


# A letter PDF waits while ``pending`` (queued) or ``generating`` (a job is converting it).
WAITING = ("pending", "generating")


def pending_documents(session: Session, *, waiting_since: dt.datetime | None = None
                      ) -> list[int]:
    """List the letter PDFs waiting to be made, oldest first.

    With ``waiting_since``, only those whose job was last enqueued or started before then
    (``claimed_at``, or ``created_at`` when never started).
    """
    query = select(Document.id).where(Document.status.in_(WAITING))
    if waiting_since is not None:
        query = query.where(func.coalesce(Document.claimed_at, Document.created_at)
                            < waiting_since)
    return list(session.scalars(query.order_by(Document.id)))


def queue_pending_pdfs(session: Session, letter_id: int) -> list[int]:
    """Enqueue the making of a letter's pending PDFs once this transaction commits (in
    immediate mode they are made then); return their ids. Call it in the transaction that
    created the letter or its new version."""
    ids = list(session.scalars(select(Document.id).where(
        Document.letter_id == letter_id, Document.status == "pending").order_by(Document.id)))
    for document_id in ids:
        jobs.enqueue_after_commit(session, generate_pdf_job, document_id)
    return ids


def generate_document(db: Database, document_id: int, converter: PdfConverter, *,
                      last_attempt: bool = True) -> bool:
    """Make a waiting letter PDF and store it; return whether this call stored it.

    Safe to run twice: a document no longer waiting (made by an earlier run, or failed) is
    left alone, and the bytes are committed with the ``ready`` status only if the document
    is still waiting when the conversion ends, so of two runs at once one stores it. The
    conversion runs outside any transaction; a crash leaves the document waiting, never
    pointing at missing bytes. A failed conversion marks the document ``failed`` with its
    reason when ``last_attempt``, else is raised for the job to be retried (the document keeps
    waiting). Raises NotFoundError for an unknown document.
    """
    with db.transaction() as session:
        document = session.get(Document, document_id)
        if document is None:
            raise NotFoundError(f"There is no document {document_id}.")
        if document.status not in WAITING:
            return False
        # Shown as being made; the time is when this attempt began (see resume_pending_pdfs).
        document.status = "generating"
        document.claimed_at = utcnow()
        docx_doc = session.scalar(select(Document).where(
            Document.version_id == document.version_id, Document.kind == "letter_docx"))
        assert docx_doc is not None
        docx = document_bytes(session, docx_doc)
    try:
        pdf = converter.convert_bytes(docx)
    except Exception as exc:  # LibreOffice is another process: any failure is a failed try
        if not last_attempt:
            raise
        reason = str(exc) if isinstance(exc, CounterpartError) else \
            f"LibreOffice failed: {exc or type(exc).__name__}"
        with db.transaction() as session:
            session.execute(update(Document).where(Document.id == document_id,
                                                   Document.status.in_(WAITING))
                            .values(status="failed", error=reason))
        return False
    with db.transaction() as session:
        status = session.scalar(select(Document.status).where(Document.id == document_id)
                                .with_for_update())
        if status not in WAITING:
            return False  # made meanwhile by another run: this one's bytes are not kept
        sha = store_blob(session, pdf)
        done = rowcount(session.execute(
            update(Document).where(Document.id == document_id, Document.status.in_(WAITING))
            .values(status="ready", blob_sha256=sha, size=len(pdf), error=None)))
        assert done == 1, "the document's row is locked"
        document = session.get(Document, document_id)
        assert document is not None
        letter = get_letter(session, document.letter_id, for_update=True)
        version = session.get(LetterVersion, document.version_id)
        if (version is not None and version.number == letter.current_version
                and letter.status == LetterStatus.DRAFT.value):
            letter.status = transition(letter.status, LetterStatus.GENERATED).value
            letter.updated_at = utcnow()
        record_event(session, letter.id, "generated", actor="system",
                     detail={"version": version.number if version else None,
                             "document": document.filename, "sha256": sha})
    return True


@jobs.job(retries=PDF_RETRIES, retry_delay=PDF_RETRY_DELAY_SECONDS,
          retry_backoff=PDF_RETRY_BACKOFF, context=True)
def generate_pdf_job(document_id: int, task: Task | None = None) -> None:
    """Make one letter PDF with the worker's LibreOffice (see :func:`generate_document`).

    A failed conversion is retried with backoff (``PDF_RETRIES`` times); the last attempt
    marks the document failed instead. Run by ``.call_local``, it is a last attempt.
    """
    rt = jobs.runtime()
    last_attempt = task is None or not task.retries
    try:
        generate_document(rt.db, document_id, rt.converter, last_attempt=last_attempt)
    except NotFoundError:
        log.warning("document %s is gone; there is no PDF to make", document_id)


@jobs.periodic(minutes=5)
def resume_pending_pdfs() -> int:
    """Enqueue again the letter PDFs still waiting ``RESUME_PENDING_AFTER`` after their job was
    last enqueued or started; return how many.

    A safety net only: the worker that dies mid-job has its job put back by the queue's
    in-flight ledger (:mod:`workflow.jobs`). What it catches is an enqueue lost between the
    commit that made the document pending and the write to the queue (two stores, so not one
    transaction), or a queue emptied by hand. A document put back here is marked with the
    time, so the next sweep leaves it to its job for another ``RESUME_PENDING_AFTER``.
    """
    now = utcnow()
    with jobs.runtime().db.transaction() as session:
        ids = pending_documents(session, waiting_since=now - RESUME_PENDING_AFTER)
        if ids:
            session.execute(update(Document).where(Document.id.in_(ids),
                                                   Document.status.in_(WAITING))
                            .values(claimed_at=now))
        for document_id in ids:
            jobs.enqueue_after_commit(session, generate_pdf_job, document_id)
    if ids:
        log.warning("letter PDFs %s were still waiting; their jobs are queued again", ids)
    return len(ids)


def retry_document(session: Session, document_id: int) -> bool:
    """Put a failed letter PDF back in the queue (its job is enqueued once this transaction
    commits); return whether it had failed."""
    changed = rowcount(session.execute(
        update(Document).where(Document.id == document_id, Document.status == "failed")
        .values(status="pending", error=None, claimed_at=utcnow())))
    if changed:
        jobs.enqueue_after_commit(session, generate_pdf_job, document_id)
    return changed == 1


def wait_for_document(db: Database, document_id: int, *, timeout: float = 120.0,
                      poll: float = 0.1, max_poll: float = 1.0,
                      sleep: Callable[[float], None] = time.sleep) -> Document:
    """Return a letter PDF once it is ready or failed, reading the database until then.

    Never makes it (a background job does). Polls every ``poll`` seconds, growing to
    ``max_poll``. Raises NotFoundError for an unknown document, and NotReadyError if it is
    still waiting after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    delay = poll
    while True:
        with db.transaction() as session:
            document = session.get(Document, document_id)
            if document is None:
                raise NotFoundError(f"There is no document {document_id}.")
        if document.status not in WAITING:
            return document
        left = deadline - time.monotonic()
        if left <= 0:
            raise NotReadyError(f"{document.filename} is still being generated; try again "
                                "in a moment.")
        sleep(min(delay, left))
        delay = min(delay * 1.5, max_poll)
