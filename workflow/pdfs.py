"""Put signatures on counterparts, assemble the executed letter, and check uploaded scans.

A letter is executed in counterparts: each signer signs a copy of their own, and when all have
signed the letter's pages, each signed signature page and a certificate of completion are put
together into one executed PDF (then sealed by :mod:`workflow.seal`).

Where each party signs is exact: the template's ``sign_here('ROLE')`` field becomes a pair of
named destinations of the PDF (:func:`signing_fields`), so no text is searched for. Drawings go
onto a reportlab overlay that pypdf merges onto the page, so the letter's own text stays as it
was. Coordinates are PDF points with the origin at the bottom left of the page.

Uploaded files are untrusted: :func:`inspect_upload` parses them in a child Python process with
a time limit and an address-space limit, so a hang or a decompression bomb ends the child, not
the application.
"""

from __future__ import annotations

import base64
import functools
import io
import math
import re
import unicodedata
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Literal, NamedTuple, cast
from xml.sax.saxutils import escape

import arabic_reshaper
import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
from bidi import get_display
from PIL import Image, ImageChops, ImageDraw, ImageFont
from pypdf import PdfReader, PdfWriter
from pypdf.errors import PyPdfError
from pypdf.generic import BooleanObject, DictionaryObject, NameObject, TextStringObject
from reportlab import rl_config
from reportlab.lib import colors
from reportlab.lib.enums import TA_LEFT
from reportlab.lib.pagesizes import LETTER
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import inch
from reportlab.lib.utils import ImageReader
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen import canvas as pdfcanvas
from reportlab.platypus import (
    Image as FlowImage,
)
from reportlab.platypus import (
    KeepTogether,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from . import sandbox
from .errors import DocumentError
from .formatting import long_date
from .render import DATE_SIGNED, END_PREFIX, SIGN_HERE

__all__ = [
    "Box",
    "SigningField",
    "FieldPosition",
    "PdfFields",
    "signing_fields",
    "signing_field",
    "field_positions",
    "CertificateSigner",
    "CertificateEvent",
    "CertificateInfo",
    "SandboxResult",
    "OnlineSignature",
    "PaperSignature",
    "stamp_signature",
    "stamp_signatures",
    "signature_page_index",
    "extract_pages",
    "typed_signature_png",
    "drawn_signature_png",
    "certificate_pdf",
    "assemble_executed_pdf",
    "outline_titles",
    "UploadedPdf",
    "inspect_upload",
    "read_upload",
    "display_name",
    "run_sandboxed",
    "format_utc",
]

# reportlab wraps image data in ASCII85 by default, encoded in pure Python: half the time of a
# stamp. Binary Flate streams are smaller and any PDF reader takes them. (This is reportlab's
# process-wide setting; nothing in Counterpart needs 7-bit-clean PDFs.)
rl_config.useA85 = 0

Box = tuple[float, float, float, float]
"""A rectangle in PDF points: x0, y0, x1, y1 with the origin at the bottom left."""

FONT_DIR = Path(__file__).with_name("fonts")
HANDWRITING_FONT = FONT_DIR / "DancingScript-Regular.ttf"

# The largest signature drawn on a page: about the length of the signature line, and the height
# of two lines of 12-point type (a signature may reach into the line above it, as ink does).
SIGNATURE_MAX_WIDTH = 2.6 * inch
SIGNATURE_MAX_HEIGHT = 0.55 * inch
# Ink of typed signatures: a dark blue that reads as pen on paper.
INK_RGB = (22, 34, 110)
# Margins kept clear when placing the "signed electronically" note.
PAGE_MARGIN = 0.75 * inch

DRAWN_MAX_SIZE = (2000, 1000)
DRAWN_MAX_BYTES = 5 * 1024 * 1024
# What a drawing needs to count as a signature, in CSS pixels of the signing canvas (96 to the
# inch, whatever the screen's pixel density): ink reaching at least 40 pixels across or down
# (about 10 mm, a short set of initials), and at least 120 pixels of ink (a 3-pixel pen stroke
# 40 pixels long). A tap, a dot or a tiny scribble is refused.
DRAWN_MIN_EXTENT = 40
DRAWN_MIN_INK = 120
DRAWN_PIXEL_RATIOS = (0.5, 4.0)
TYPED_MAX_CHARS = 80

UPLOAD_TIME_LIMIT = 10.0
UPLOAD_MEMORY_LIMIT = 512 * 1024 * 1024

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_SPACES = {0x20, 0x09, 0x0A, 0x0D, 0xA0, 0x02, 0xFFFE}
_UNDERSCORE = 0x5F


# --------------------------------------------------------------------------------------------
# Signing fields: where each party signs, as the template placed it


@dataclass(frozen=True)
class SigningField:
    """Where a template's signing field is on the PDF: ``sign_here('ROLE')`` or
    ``date_signed('ROLE')``, read from its named destinations (see :func:`signing_fields`).
    """

    role: str
    page_index: int
    line_box: Box
    """What the field printed: for a signature, the signature line (its rule of underscores,
    end to end); for a date, the date's words (or its blank line)."""
    page_box: Box
    """The page's media box."""

    @property
    def box(self) -> Box:
        """Where the party's signature goes: on the line, as wide as it, and up to
        :data:`SIGNATURE_MAX_HEIGHT` above it (a date field's box is its ``line_box``)."""
        x0, y0, x1, _ = self.line_box
        return (x0, y0, x1, y0 + SIGNATURE_MAX_HEIGHT)

    @property
    def position(self) -> FieldPosition:
        """The field as (page index, box)."""
        return FieldPosition(self.page_index, self.box)


class FieldPosition(NamedTuple):
    """A field's place: its 0-based page and its box in PDF points."""

    page_index: int
    box: Box


@dataclass(frozen=True)
class PdfFields:
    """The signing fields of one PDF, by role: signature fields and date fields."""

    signatures: Mapping[str, SigningField]
    dates: Mapping[str, SigningField]

    def signature(self, role: str) -> SigningField:
        """Return the signature field of a role, or raise DocumentError naming it."""
        field = self.signatures.get(role)
        if field is None:
            known = ", ".join(self.signatures) or "none"
            raise DocumentError(f"The letter PDF has no signature field for the party "
                                f"{role!r} (its template's sign_here('{role}')); its signature "
                                f"fields: {known}.")
        return field

    def positions(self) -> dict[str, FieldPosition]:
        """Every signature field as {role: (page index, box)}."""
        return {role: field.position for role, field in self.signatures.items()}


_FIELD_KINDS = (SIGN_HERE, DATE_SIGNED)
# Where the first character of a field is looked for, below the top of its line of text, and
# how far around that point (pdfium looks half of each tolerance either side).
_FIRST_CHAR_DROP = 9.0
_FIRST_CHAR_TOLERANCE = (3.0, 20.0)
# How many characters after the one found there may still precede the field.
_FIRST_CHAR_SLACK = 400


def _destination_name(raw: str) -> str:
    """A named destination's name as the template gave it to the bookmark.

    LibreOffice writes every character other than letters, digits and ``-`` as two hex digits
    (``_`` as ``5F``). Bookmarks of signing fields hold lower-case letters, digits and ``_``
    only, so an upper-case ``F`` after a ``5`` can only be such an escape.
    """
    return raw.lstrip("/").replace("5F", "_")


def _field_names(reader: PdfReader) -> dict[tuple[str, str, bool], tuple[int, float, float]]:
    """Read the signing fields' named destinations: (kind, role, end) to (page, left, top)."""
    try:
        destinations = reader.named_destinations
    except (PyPdfError, ValueError, KeyError, TypeError) as exc:
        raise DocumentError(f"The letter PDF's named destinations could not be read "
                            f"({exc}).") from exc
    found: dict[tuple[str, str, bool], tuple[int, float, float]] = {}
    for raw, destination in destinations.items():
        name = _destination_name(str(raw))
        end = name.startswith(END_PREFIX)
        stem = name[len(END_PREFIX):] if end else name
        for kind in _FIELD_KINDS:
            if not stem.startswith(kind + "_"):
                continue
            role = stem[len(kind) + 1:]
            try:
                page = reader.get_destination_page_number(destination)
                if destination.left is None or destination.top is None:
                    continue
                left, top = float(destination.left), float(destination.top)
            except (PyPdfError, ValueError, TypeError, KeyError):
                continue
            if page is not None and page >= 0 and math.isfinite(left) and math.isfinite(top):
                found[(kind, role, end)] = (page, left, top)
    return found


def _field_text_box(textpage: pdfium.PdfTextPage, kind: str, x0: float, x1: float | None,
                    top: float) -> Box | None:
    """Measure what a field printed on its line of text, from the first character at its
    start to its end (``x1``; unknown: to the end of what it printed): the underscores of a
    signature line, or a date's characters."""
    index = textpage.get_index(x0 + 1.5, top - _FIRST_CHAR_DROP, *_FIRST_CHAR_TOLERANCE)
    if index is None or index < 0:
        return None
    right_end = x1 if x1 is not None else math.inf
    boxes: list[Box] = []
    line: float | None = None
    for i in range(max(0, index - 2), textpage.count_chars()):
        char = pdfium_c.FPDFText_GetUnicode(textpage, i)
        left, bottom, right, upper = textpage.get_charbox(i)
        on_line = upper <= top + 2 and bottom >= top - 30
        if not on_line and not boxes:
            if i > index + _FIRST_CHAR_SLACK:
                break
            continue  # the end of the line before, or a character found beside the field
        if char in _SPACES or right <= x0 + 0.25:
            if boxes and (left >= right_end - 0.25 or x1 is None):
                break
            continue
        if left >= right_end - 0.25 or not on_line:
            break
        if kind == SIGN_HERE and char != _UNDERSCORE:
            if boxes:
                break
            continue
        if line is not None and abs(bottom - line) > 4 and char != _UNDERSCORE:
            break
        line = bottom if line is None else line
        boxes.append((left, bottom, right, upper))
    return _union(boxes) if boxes else None


@functools.lru_cache(maxsize=32)
def _read_fields(pdf: bytes) -> PdfFields:
    reader = _pypdf_reader(pdf, "The letter PDF")
    names = _field_names(reader)
    if not names:
        return PdfFields({}, {})
    document = _open_pdfium(pdf)
    found: dict[str, dict[str, SigningField]] = {SIGN_HERE: {}, DATE_SIGNED: {}}
    try:
        pages: dict[int, tuple[pdfium.PdfPage, pdfium.PdfTextPage]] = {}
        for (kind, role, end), (page_index, left, top) in sorted(names.items()):
            if end or page_index >= len(document):
                continue
            if page_index not in pages:
                page = document[page_index]
                pages[page_index] = (page, page.get_textpage())
            page, textpage = pages[page_index]
            page_box = tuple(float(v) for v in page.get_mediabox())
            right = names.get((kind, role, True))
            # The end of the field, where it is on the same line (LibreOffice drops a bookmark
            # at the very end of a document: then the end of what the field printed).
            x1 = right[1] if right and right[0] == page_index and abs(right[2] - top) < 1 \
                and right[1] > left else None
            measured = _field_text_box(textpage, kind, left, x1, top)
            if measured is None:
                # Nothing printed there to measure: the line is where 12-point type puts it.
                measured = (left, top - 12.5, x1 or left + SIGNATURE_MAX_WIDTH, top - 11.9)
            box = (left, measured[1], x1 if x1 is not None else measured[2], measured[3])
            found[kind][role] = SigningField(role, page_index, box,
                                             cast(Box, page_box))
    finally:
        for page, textpage in pages.values():
            textpage.close()
            page.close()
        document.close()
    return PdfFields(found[SIGN_HERE], found[DATE_SIGNED])


def signing_fields(pdf: bytes) -> PdfFields:
    """Read where each party signs (and dates) from a PDF made from a template.

    Each ``sign_here('ROLE')`` and ``date_signed('ROLE')`` of the template is a pair of Word
    bookmarks that LibreOffice exports as named destinations (page, left, top): the field's
    start and end on its line. Its height is measured from the glyphs printed there, found at
    that exact place (no text is searched for). A PDF without fields has none.
    """
    return _read_fields(bytes(pdf))


def signing_field(pdf: bytes, role: str) -> SigningField:
    """Return the signature field of one role, or raise DocumentError naming the role."""
    return signing_fields(pdf).signature(role)


def field_positions(pdf: bytes) -> dict[str, FieldPosition]:
    """Read ``{role: (page_index, box)}`` of a PDF's signature fields (see :func:`signing_fields`).

    The box is where the party's signature goes: on the signature line and above it.
    """
    return signing_fields(pdf).positions()


def signature_page_index(pdf: bytes, roles: Sequence[str]) -> int:
    """Return the index of the page that holds the signature fields of all the named roles."""
    if not roles:
        raise ValueError("signature_page_index needs at least one role")
    fields = signing_fields(pdf)
    pages = {fields.signature(role).page_index: role for role in roles}
    if len(pages) > 1:
        where = ", ".join(f"{role} on page {index + 1}" for index, role in sorted(pages.items()))
        raise DocumentError(f"The signature fields are on different pages ({where}); "
                            f"sign each page as its own counterpart.")
    return next(iter(pages))


def _open_pdfium(pdf: bytes) -> pdfium.PdfDocument:
    try:
        return pdfium.PdfDocument(pdf)
    except pdfium.PdfiumError as exc:
        raise DocumentError(f"The letter PDF could not be read ({exc}).") from exc


def _clean_name(name: str) -> str:
    return " ".join(unicodedata.normalize("NFC", name).split())


def _union(boxes: Sequence[Box]) -> Box:
    return (min(b[0] for b in boxes), min(b[1] for b in boxes),
            max(b[2] for b in boxes), max(b[3] for b in boxes))


# How many characters either side of the one found under a line are looked at for the name.
_NAME_WINDOW = 120


def _text_under(textpage: pdfium.PdfTextPage, field: SigningField) -> Box | None:
    """Measure the first line printed just under a signature line (the party's name, as the
    template prints it): the characters found there on one line, from the line's left end.

    Characters near the one found are gathered by their place, not their order, so a
    right-to-left name is measured whole.
    """
    x0, y0, _x1, _ = field.line_box
    index = textpage.get_index(x0 + 3, y0 - 7, 4.0, 6.0)
    if index is None or index < 0:
        return None
    first = textpage.get_charbox(index)
    if first[3] > y0 + 1 or first[3] < y0 - 18 or first[0] < x0 - 4:
        return None
    boxes: list[Box] = []
    for i in range(max(0, index - _NAME_WINDOW), min(textpage.count_chars(),
                                                      index + _NAME_WINDOW)):
        left, bottom, right, upper = textpage.get_charbox(i)
        char = pdfium_c.FPDFText_GetUnicode(textpage, i)
        if char in _SPACES or right - left <= 0:
            continue
        if abs(bottom - first[1]) <= 3 and left >= x0 - 4 and y0 - 18 <= upper <= y0 + 1:
            boxes.append((left, bottom, right, upper))
    return _union(boxes) if boxes else None


# --------------------------------------------------------------------------------------------
# Stamping signatures


@dataclass(frozen=True)
class OnlineSignature:
    """A signature adopted online: stamped at its party's signature field, the date of
    signing beside it.

    ``role`` is the party's role (the template's ``sign_here('ROLE')``); ``signed_on`` is
    the calendar date of signing in the signer's own time zone.
    """

    role: str
    png: bytes
    signed_on: date


@dataclass(frozen=True)
class PaperSignature:
    """A signature made in ink on paper, as the conformed copy of the letter shows it.

    ``png`` is the signer's ink cropped from their scan (transparent around the ink), drawn at
    ``crop_box`` (PDF points on the page of their signature field) at 1:1. Without a crop, only
    the note that the signer signed on paper (and on which date, if staff gave it) is written.
    """

    role: str
    png: bytes | None = None
    crop_box: Box | None = None
    signed_on: date | None = None


def stamp_signature(pdf: bytes, *, role: str, signature_png: bytes, signed_on: date) -> bytes:
    """Return a copy of the letter signed by one party at their signature field.

    The signature image sits on the field's line, never larger than it was drawn (scaled down
    into the field's box if it is larger), and "Signed electronically on <date>" is noted
    beside the name printed under the line, in small type.
    """
    return stamp_signatures(pdf, [OnlineSignature(role, signature_png, signed_on)])


def stamp_signatures(pdf: bytes, signatures: Sequence[OnlineSignature | PaperSignature]
                     ) -> bytes:
    """Return a copy of the letter with every given signature at its party's field.

    Online signatures are stamped as :func:`stamp_signature` does; paper ones are drawn from
    their crop at its box. Raises DocumentError if the PDF has no signature field for a role
    or a crop box lies off its page.
    """
    fields = signing_fields(pdf)
    placed = [(signature, fields.signature(signature.role)) for signature in signatures]
    document = _open_pdfium(pdf)
    drawings: dict[int, list[_Drawing]] = {}
    try:
        for signature, field in placed:
            items = drawings.setdefault(field.page_index, [])
            page = document[field.page_index]
            textpage = page.get_textpage()
            try:
                under = _text_under(textpage, field)
            finally:
                textpage.close()
                page.close()
            if isinstance(signature, OnlineSignature):
                items.append(_SignatureDrawing(field, _png_reader(signature.png),
                                               _natural_size(signature.png)))
                items.append(_NoteDrawing(
                    field, under, f"Signed electronically on {long_date(signature.signed_on)}"))
                continue
            if signature.png is not None and signature.crop_box is not None:
                crop = _crop_box_on(signature.crop_box, field.page_box, signature.role)
                items.append(_InkDrawing(crop, _png_reader(signature.png)))
            on = f" on {long_date(signature.signed_on)}" if signature.signed_on else ""
            items.append(_NoteDrawing(field, under, f"Signed on paper{on}"))
    finally:
        document.close()

    reader = _pypdf_reader(pdf, "The letter PDF")
    writer = PdfWriter(clone_from=reader)
    for page_index, items in drawings.items():
        page = writer.pages[page_index]
        media = tuple(float(v) for v in page.mediabox)
        overlay = _overlay(media, items)
        page.merge_page(PdfReader(io.BytesIO(overlay)).pages[0])
        page.compress_content_streams()
    return _written(writer)


def _crop_box_on(crop_box: Sequence[float], page_box: Box, role: str) -> Box:
    """Check that a paper signature's crop box is a real box on its page, and return it."""
    try:
        x0, y0, x1, y1 = (float(v) for v in crop_box)
    except (TypeError, ValueError):
        x0 = y0 = x1 = y1 = math.nan
    inside = (all(math.isfinite(v) for v in (x0, y0, x1, y1)) and x0 < x1 and y0 < y1
              and x0 >= page_box[0] - 1 and y0 >= page_box[1] - 1
              and x1 <= page_box[2] + 1 and y1 <= page_box[3] + 1)
    if not inside:
        raise DocumentError(f"The paper signature of the party {role!r} cannot be drawn: "
                            f"its crop box {list(crop_box)!r} is not a box on the signature "
                            f"page (PDF points, x0 y0 x1 y1).")
    return x0, y0, x1, y1


def _natural_size(png: bytes) -> tuple[float, float]:
    """Return the size in points at which a signature image was made.

    That is its pixels at the resolution the PNG states, or at 96 pixels an inch (CSS pixels)
    when it states none.
    """
    try:
        with Image.open(io.BytesIO(png), formats=["PNG"]) as image:
            width, height = image.size
            dpi = image.info.get("dpi")
    except (OSError, SyntaxError, ValueError) as exc:
        raise DocumentError(f"The signature image could not be read ({exc}).") from exc
    x_dpi, y_dpi = (float(dpi[0]), float(dpi[1])) if dpi and min(dpi) > 0 else (96.0, 96.0)
    return width * 72 / x_dpi, height * 72 / y_dpi


class _SignatureDrawing(NamedTuple):
    field: SigningField
    image: ImageReader
    size: tuple[float, float]
    """The size the signature was made at, in points: it is drawn no larger."""


class _NoteDrawing(NamedTuple):
    field: SigningField
    under: Box | None
    """What is printed under the line (the name), if anything."""
    text: str


class _InkDrawing(NamedTuple):
    box: Box
    image: ImageReader


_Drawing = _SignatureDrawing | _NoteDrawing | _InkDrawing


def _overlay(page_box: tuple[float, ...], items: list[_Drawing]) -> bytes:
    """Draw the items on a transparent page of the given media box and return its PDF."""
    x0, y0, x1, y1 = page_box
    buffer = io.BytesIO()
    canvas = pdfcanvas.Canvas(buffer, pagesize=(x1 - x0, y1 - y0), pageCompression=1)
    canvas.translate(-x0, -y0)
    for item in items:
        if isinstance(item, _SignatureDrawing):
            _draw_signature(canvas, item)
        elif isinstance(item, _NoteDrawing):
            _draw_note(canvas, item, page_box)
        else:
            _draw_ink(canvas, item)
    canvas.showPage()
    canvas.save()
    return buffer.getvalue()


# The signature starts this far in from the line's left end, and its ink may dip this far
# below the line, as pen strokes do.
_SIGNATURE_INDENT = 6.0
_SIGNATURE_DIP = 2.0


def _draw_signature(canvas: pdfcanvas.Canvas, item: _SignatureDrawing) -> None:
    natural_width, natural_height = item.size
    x0, y0, x1, y1 = item.field.box
    room = max(1.0, x1 - x0 - _SIGNATURE_INDENT)
    # Scale down to fit the field's box, never up: a small drawing stays the size it was drawn.
    scale = min(1.0, room / natural_width, (y1 - y0) / natural_height)
    width, height = natural_width * scale, natural_height * scale
    canvas.drawImage(item.image, x0 + _SIGNATURE_INDENT, y0 - _SIGNATURE_DIP, width=width,
                     height=height, mask="auto")


def _draw_note(canvas: pdfcanvas.Canvas, item: _NoteDrawing,
               page_box: tuple[float, ...]) -> None:
    """Write the date of signing right of the name under the line, or where there is room:
    right of the line, left of it, or under the name."""
    font, size = "Helvetica", 7.0
    width = pdfmetrics.stringWidth(item.text, font, size)
    line = item.field.line_box
    left_limit, right_limit = page_box[0] + PAGE_MARGIN, page_box[2] - PAGE_MARGIN
    name = item.under
    if name is not None and name[2] + 10 + width <= right_limit:
        x, y = name[2] + 10, name[1] + 1
    elif line[2] + 6 + width <= right_limit:
        x, y = line[2] + 6, line[1] + 1
    elif line[0] - 6 - width >= left_limit:
        x, y = line[0] - 6 - width, line[1] + 1
    else:
        x, y = line[0], (name[1] if name is not None else line[1] - 12) - size - 1
    canvas.setFillColorRGB(0.25, 0.25, 0.3)
    canvas.setFont(font, size)
    canvas.drawString(x, y, item.text)


def _draw_ink(canvas: pdfcanvas.Canvas, item: _InkDrawing) -> None:
    x0, y0, x1, y1 = item.box
    canvas.drawImage(item.image, x0, y0, width=x1 - x0, height=y1 - y0, mask="auto")


def _png_reader(png: bytes) -> ImageReader:
    """Open signature PNG bytes for reportlab, with a clear error if they are not an image."""
    if not png.startswith(_PNG_MAGIC):
        raise DocumentError("The signature image is not a PNG image.")
    try:
        return ImageReader(io.BytesIO(png))
    except Exception as exc:  # reportlab wraps Pillow's errors in its own exception types
        raise DocumentError(f"The signature image could not be read ({exc}).") from exc


def _pypdf_reader(pdf: bytes, what: str) -> PdfReader:
    try:
        return PdfReader(io.BytesIO(pdf))
    except (PyPdfError, ValueError, OSError) as exc:
        raise DocumentError(f"{what} could not be read ({exc}).") from exc


def _written(writer: PdfWriter) -> bytes:
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def extract_pages(pdf: bytes, indices: list[int]) -> bytes:
    """Return a new PDF made of the given pages (0-based) of ``pdf``, in the order given."""
    reader = _pypdf_reader(pdf, "The PDF")
    count = len(reader.pages)
    writer = PdfWriter()
    for index in indices:
        if not 0 <= index < count:
            raise DocumentError(f"The PDF has {count} pages; there is no page {index + 1}.")
        writer.add_page(reader.pages[index])
    return _written(writer)


def page_count(pdf: bytes) -> int:
    """Count the pages of a PDF this system made (untrusted files go to inspect_upload)."""
    return len(_pypdf_reader(pdf, "The PDF").pages)


_ENVELOPE_RE = re.compile(rb"/CounterpartEnvelope\s*\(([0-9a-f\\-]{36,160})\)")
_OCTAL_ESCAPE = re.compile(rb"\\([0-7]{1,3})")
_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def envelope_id_of(pdf: bytes) -> str | None:
    """Read the envelope id an executed PDF names in its document information, if any.

    The bytes are searched, not parsed, so that a hostile file cannot make this hang: the
    executed PDF writes its information dictionary uncompressed, as a literal string in which
    pypdf may escape characters in octal.
    """
    for found in _ENVELOPE_RE.findall(pdf[:2_000_000]) + _ENVELOPE_RE.findall(pdf[-2_000_000:]):
        value = _OCTAL_ESCAPE.sub(lambda m: bytes([int(m.group(1), 8) & 0xFF]), found)
        text = value.decode("ascii", "replace")
        if _UUID_RE.match(text):
            return text
    return None


# --------------------------------------------------------------------------------------------
# Signature images


@functools.lru_cache(maxsize=16)
def _handwriting_font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(HANDWRITING_FONT), size)


@functools.lru_cache(maxsize=1024)
def _glyph_pixels(char: str, size: int) -> bytes:
    image = Image.new("L", (size * 2, size * 2), 0)
    ImageDraw.Draw(image).text((size // 2, size // 2), char, font=_handwriting_font(size),
                               fill=255)
    return image.tobytes()


def _missing_glyphs(text: str, size: int = 24) -> list[str]:
    """List the characters the handwriting font draws as its 'missing glyph' box."""
    missing = _glyph_pixels("\ue000", size)  # a private-use character no font here defines
    return [ch for ch in dict.fromkeys(text)
            if not ch.isspace() and _glyph_pixels(ch, size) == missing]


def typed_signature_png(text: str, *, height_px: int = 120) -> bytes:
    """Draw a typed name in the handwriting font, dark blue ink on a transparent background.

    ``height_px`` is the height of a line of the handwriting (ascender to descender); the image
    is cropped to the ink, so it is about that high (accents on capitals may add a little).
    """
    clean = " ".join("".join(ch for ch in unicodedata.normalize("NFC", text)
                             if unicodedata.category(ch) not in {"Cc", "Cf"}).split())
    if not clean:
        raise DocumentError("Type your name to make a typed signature.")
    if len(clean) > TYPED_MAX_CHARS:
        raise DocumentError(f"A typed signature can have at most {TYPED_MAX_CHARS} characters.")
    missing = _missing_glyphs(clean)
    if missing:
        raise DocumentError(f"The handwriting font cannot draw {' '.join(missing)}; "
                            f"draw the signature instead.")
    if not 20 <= height_px <= 600:
        raise ValueError("height_px must be between 20 and 600")
    ascent, descent = _handwriting_font(100).getmetrics()
    font = _handwriting_font(max(8, round(height_px * 100 / (ascent + descent))))
    left, top, right, bottom = (math.floor(v) if i < 2 else math.ceil(v)
                                for i, v in enumerate(font.getbbox(clean, anchor="ls")))
    pad = max(2, height_px // 20)
    image = Image.new("RGBA", (right - left + 2 * pad, bottom - top + 2 * pad), INK_RGB + (0,))
    ImageDraw.Draw(image).text((pad - left, pad - top), clean, font=font,
                               fill=INK_RGB + (255,), anchor="ls")
    return _png_bytes(_crop_to_ink(image, pad))


def drawn_signature_png(png: bytes, *, pixel_ratio: float = 1.0) -> bytes:
    """Check a signature drawn on a canvas and return it cropped to the ink, as a clean PNG.

    ``pixel_ratio`` is the canvas's device pixels per CSS pixel (a browser's
    ``devicePixelRatio``; 1 for a plain image). The background (white or transparent) becomes
    transparent, and the PNG records its resolution (96 dpi times ``pixel_ratio``) so that it
    is stamped no larger than it was drawn. Anything that is not a PNG, is larger than
    2000 x 1000 pixels, has no ink, or too little ink or too small a reach to be a signature
    (:data:`DRAWN_MIN_EXTENT`, :data:`DRAWN_MIN_INK`) is refused with a DocumentError.
    """
    low, high = DRAWN_PIXEL_RATIOS
    if not isinstance(pixel_ratio, int | float) or not low <= pixel_ratio <= high:
        raise ValueError(f"pixel_ratio must be a number from {low:g} to {high:g}")
    if len(png) > DRAWN_MAX_BYTES:
        raise DocumentError(f"The drawn signature is too large ({len(png) // 1024} KB; "
                            f"the limit is {DRAWN_MAX_BYTES // 1024} KB).")
    if not png.startswith(_PNG_MAGIC):
        raise DocumentError("The drawn signature is not a PNG image.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(png), formats=["PNG"]) as opened:
                width, height = opened.size
                if width > DRAWN_MAX_SIZE[0] or height > DRAWN_MAX_SIZE[1]:
                    raise DocumentError(
                        f"The drawn signature is {width} x {height} pixels; the limit is "
                        f"{DRAWN_MAX_SIZE[0]} x {DRAWN_MAX_SIZE[1]}.")
                opened.load()
                image = opened.convert("RGBA")
    except DocumentError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as exc:
        raise DocumentError(
            f"The drawn signature could not be read as a PNG image ({exc}).") from exc

    # Ink is what is opaque enough and dark enough; a white canvas background is neither.
    red, green, blue, alpha = image.split()
    lightness = Image.merge("RGB", (red, green, blue)).convert("L")
    darkness = lightness.point(lambda v: min(255, (255 - v) * 3))
    ink_alpha = ImageChops.darker(alpha, darkness)
    ink = ink_alpha.point(lambda v: 255 if v >= 96 else 0)
    ink_pixels = sum(ink.histogram()[255:])
    if ink_pixels < 20:
        raise DocumentError("The drawn signature is empty; draw your signature first.")
    x0, y0, x1, y1 = ink.getbbox() or (0, 0, 0, 0)
    reach_x, reach_y = (x1 - x0) / pixel_ratio, (y1 - y0) / pixel_ratio
    ink_area = ink_pixels / pixel_ratio ** 2
    if max(reach_x, reach_y) < DRAWN_MIN_EXTENT or ink_area < DRAWN_MIN_INK:
        raise DocumentError(
            f"The drawing is too small to be a signature: its ink spans {reach_x:.0f} x "
            f"{reach_y:.0f} pixels of the signing box, {ink_area:.0f} pixels of ink in all; a "
            f"signature reaches at least {DRAWN_MIN_EXTENT} pixels and has at least "
            f"{DRAWN_MIN_INK} pixels of ink. Sign across the box as you would on paper.")
    image.putalpha(ink_alpha)
    dpi = 96 * float(pixel_ratio)
    return _png_bytes(_crop_to_ink(image, 4), dpi=(dpi, dpi))


def _crop_to_ink(image: Image.Image, pad: int) -> Image.Image:
    bbox = image.getchannel("A").point(lambda v: 255 if v >= 24 else 0).getbbox()
    if bbox is None:
        raise DocumentError("The signature has no ink.")
    x0, y0, x1, y1 = bbox
    return image.crop((max(0, x0 - pad), max(0, y0 - pad),
                       min(image.width, x1 + pad), min(image.height, y1 + pad)))


def _png_bytes(image: Image.Image, dpi: tuple[float, float] | None = None) -> bytes:
    buffer = io.BytesIO()
    if dpi is None:
        image.save(buffer, format="PNG")
    else:
        image.save(buffer, format="PNG", dpi=dpi)
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------
# Certificate of completion

SigningMethod = Literal["typed", "drawn", "paper"]

_METHOD_LABELS = {
    "typed": "Typed signature, signed electronically",
    "drawn": "Drawn signature, signed electronically",
    "paper": "Signed on paper; scanned counterpart uploaded",
}


@dataclass
class CertificateSigner:
    """One signer as the certificate of completion shows them; times are UTC.

    ``signed_on`` is the calendar date of signing: in ``time_zone`` for an online signer, as
    staff read it from the paper for a paper one. For paper, ``uploaded_at`` is when the scan
    was uploaded, ``ink`` what the ink check said ("found" or "accepted_without_ink", with
    ``ink_accepted_by``), and ``order_override_reason`` / ``order_override_by`` a signing order
    staff overrode. ``emailed_at`` is when the mail server accepted the signer's invitation
    (None: the link was handed over by staff).
    """

    name: str
    email: str
    role: str
    method: SigningMethod
    consent_at: datetime | None
    first_viewed_at: datetime | None
    signed_at: datetime | None
    ip: str | None
    user_agent: str | None
    signature_png: bytes | None = None
    time_zone: str | None = None
    signed_on: date | None = None
    emailed_at: datetime | None = None
    uploaded_at: datetime | None = None
    ink: str | None = None
    ink_accepted_by: str | None = None
    order_override_reason: str | None = None
    order_override_by: str | None = None
    recorded_by: str | None = None
    identified_by: str | None = None
    """How an online signer was identified: "link only", or "link and a one-time code
    emailed to ADDRESS, entered at TIME"."""


class CertificateEvent(NamedTuple):
    """One line of the envelope's history: when, what, who, and any detail."""

    at: datetime
    type: str
    actor: str
    detail: str = ""


@dataclass
class CertificateInfo:
    """What the certificate of completion of one envelope states."""

    envelope_id: str
    title: str
    letter_sha256: str
    completed_at: datetime
    signers: list[CertificateSigner]
    events: list[CertificateEvent]


def format_utc(moment: datetime | None) -> str:
    """Format a time as "2006-07-28 14:03:11 UTC" (naive times are taken to be UTC)."""
    if moment is None:
        return "\u2014"
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _markup(text: str | None, bold: bool = False) -> str:
    """Make user text safe inside a platypus Paragraph: no markup, no control characters.

    Each run of characters is set in the first of the certificate's fonts that has glyphs
    for it (:func:`_certificate_fonts`), and right-to-left text (Hebrew, Arabic) is put in
    the order it is read, Arabic letters in their joined forms.
    """
    if not text:
        return "\u2014"
    lines = _CONTROL.sub(" ", text).split("\n")
    return "<br/>".join(_font_runs(_visual_order(line), bold) for line in lines)


_RTL_BIDI_CLASSES = frozenset({"R", "AL"})
_ARABIC_BIDI_CLASS = "AL"


def _visual_order(text: str) -> str:
    """Put a line of text in the order its characters are drawn from left to right.

    Latin text is unchanged; Arabic letters take their contextual (joined) forms and
    right-to-left runs are reversed by the Unicode bidirectional algorithm, so a reader
    reading them right to left reads them as typed.
    """
    text = unicodedata.normalize("NFC", text)
    classes = {unicodedata.bidirectional(ch) for ch in text}
    if not classes & _RTL_BIDI_CLASSES:
        return text
    if _ARABIC_BIDI_CLASS in classes:
        text = arabic_reshaper.reshape(text)
    return str(get_display(text))


@dataclass(frozen=True)
class _CertificateFont:
    """One face of the certificate's fonts: its registered names and the characters it has."""

    regular: str
    bold: str
    characters: frozenset[int]


# The certificate's fonts, in order of preference: each character is set in the first that
# has it. Debian's packages: fonts-liberation, fonts-noto-core, fonts-wqy-microhei and
# fonts-dejavu-core (see the Makefile).
_FONT_FOLDER = Path("/usr/share/fonts/truetype")
_CERTIFICATE_FACES = (
    ("CounterpartSans", "liberation/LiberationSans-Regular.ttf",
     "liberation/LiberationSans-Bold.ttf"),
    ("CounterpartNoto", "noto/NotoSans-Regular.ttf", "noto/NotoSans-Bold.ttf"),
    ("CounterpartHebrew", "noto/NotoSansHebrew-Regular.ttf", "noto/NotoSansHebrew-Bold.ttf"),
    ("CounterpartArabic", "noto/NotoSansArabic-Regular.ttf", "noto/NotoSansArabic-Bold.ttf"),
    ("CounterpartDevanagari", "noto/NotoSansDevanagari-Regular.ttf",
     "noto/NotoSansDevanagari-Bold.ttf"),
    ("CounterpartCJK", "wqy/wqy-microhei.ttc", "wqy/wqy-microhei.ttc"),
    ("CounterpartDejaVu", "dejavu/DejaVuSans.ttf", "dejavu/DejaVuSans-Bold.ttf"),
)


@functools.lru_cache(maxsize=1)
def _certificate_fonts() -> tuple[_CertificateFont, ...]:
    """Register the certificate's Unicode fonts that are installed, in order of preference.

    Latin, Greek and Cyrillic come from Liberation Sans and Noto Sans, Hebrew, Arabic and
    Devanagari from Noto, Chinese, Japanese and Korean from WenQuanYi Micro Hei, anything else
    DejaVu Sans has from it. Without any of them, Helvetica.
    """
    fonts: list[_CertificateFont] = []
    for name, regular, bold in _CERTIFICATE_FACES:
        paths = (_FONT_FOLDER / regular, _FONT_FOLDER / bold)
        if not all(path.is_file() for path in paths):
            continue
        try:
            faces = [TTFont(name, str(paths[0])), TTFont(f"{name}-Bold", str(paths[1]))]
        except Exception:  # reportlab refuses some font files (PostScript outlines)
            continue
        for face in faces:
            pdfmetrics.registerFont(face)
        pdfmetrics.registerFontFamily(name, normal=name, bold=f"{name}-Bold", italic=name,
                                      boldItalic=f"{name}-Bold")
        fonts.append(_CertificateFont(name, f"{name}-Bold",
                                      frozenset(faces[0].face.charToGlyph)))
    if not fonts:
        fonts.append(_CertificateFont("Helvetica", "Helvetica-Bold", frozenset(range(32, 256))))
    return tuple(fonts)


def _font_runs(text: str, bold: bool) -> str:
    """Mark up text as runs of the first certificate font that has each character."""
    fonts = _certificate_fonts()
    runs: list[tuple[_CertificateFont, list[str]]] = []
    for ch in text:
        current = runs[-1][0] if runs else fonts[0]
        if ord(ch) in current.characters or ch.isspace():
            font = current
        else:
            font = next((f for f in fonts if ord(ch) in f.characters), current)
        if runs and runs[-1][0] is font:
            runs[-1][1].append(ch)
        else:
            runs.append((font, [ch]))
    base = fonts[0]
    return "".join(escape("".join(chars)) if font is base else
                   f'<font name="{font.bold if bold else font.regular}">'
                   f'{escape("".join(chars))}</font>'
                   for font, chars in runs)


def _date_of_signing(signer: CertificateSigner) -> str:
    """Say a signer's date of signing with where it comes from: "March 3, 2027 (UTC)"."""
    if signer.signed_on is None:
        return "not given"
    if signer.method == "paper":
        return f"{long_date(signer.signed_on)} (as given by staff from the signed copy)"
    return f"{long_date(signer.signed_on)} ({signer.time_zone or 'UTC'})"


def _signer_rows(signer: CertificateSigner) -> list[tuple[str, str]]:
    """The certificate's lines about one signer, as (label, text)."""
    link = (f"emailed to {signer.email or 'the signer'} at {format_utc(signer.emailed_at)}"
            if signer.emailed_at else "link handed over by staff")
    rows = [("Email", signer.email), ("Role", signer.role),
            ("Method", _METHOD_LABELS.get(signer.method, signer.method)),
            ("Signing link", link)]
    if signer.method == "paper":
        if signer.ink == "found":
            ink = "ink found on the signer's signature line"
        elif signer.ink == "accepted_without_ink":
            ink = (f"no ink found on the signature line; accepted without it by "
                   f"{signer.ink_accepted_by or 'staff'}")
        else:
            ink = "not checked"
        rows += [
            ("Date of signing", _date_of_signing(signer)),
            ("Scan uploaded", format_utc(signer.uploaded_at or signer.signed_at)),
            ("Recorded by", signer.recorded_by or "\u2014"),
            ("Signature check", ink),
        ]
        if signer.order_override_reason:
            rows.append(("Signing order", f"overridden by {signer.order_override_by or 'staff'}"
                                          f": {signer.order_override_reason}"))
        return rows
    return rows + [
        ("Consent to sign electronically", format_utc(signer.consent_at)),
        ("First viewed", format_utc(signer.first_viewed_at)),
        ("Signed", f"{format_utc(signer.signed_at)}; date of signing "
                   f"{_date_of_signing(signer)}"),
        ("Identified by", signer.identified_by or "link only"),
        ("IP address", signer.ip or "\u2014"),
        ("User agent", signer.user_agent or "\u2014"),
    ]


def certificate_pdf(info: CertificateInfo) -> bytes:
    """Lay out the certificate of completion of an envelope as a US Letter PDF."""
    regular, bold = _certificate_fonts()[0].regular, _certificate_fonts()[0].bold
    dark = colors.HexColor("#1f2a44")
    grey = colors.HexColor("#5b6270")
    rule = colors.HexColor("#c9ced8")
    styles = {
        "title": ParagraphStyle("title", fontName=bold, fontSize=20, leading=24, textColor=dark,
                                spaceAfter=4),
        "subtitle": ParagraphStyle("subtitle", fontName=regular, fontSize=9.5, leading=12,
                                   textColor=grey, spaceAfter=14),
        "heading": ParagraphStyle("heading", fontName=bold, fontSize=12, leading=15,
                                  textColor=dark, spaceBefore=12, spaceAfter=6,
                                  keepWithNext=1),
        "label": ParagraphStyle("label", fontName=bold, fontSize=8.5, leading=11,
                                textColor=grey),
        "value": ParagraphStyle("value", fontName=regular, fontSize=9, leading=11.5,
                                alignment=TA_LEFT),
        "mono": ParagraphStyle("mono", fontName="Courier", fontSize=8, leading=10.5),
        "cell": ParagraphStyle("cell", fontName=regular, fontSize=8, leading=10),
        "cellhead": ParagraphStyle("cellhead", fontName=bold, fontSize=8, leading=10,
                                   textColor=colors.white),
        "signer": ParagraphStyle("signer", fontName=bold, fontSize=10.5, leading=13,
                                 textColor=dark),
    }

    def para(text: str | None, style: str = "value") -> Paragraph:
        return Paragraph(_markup(text, styles[style].fontName == bold), styles[style])

    def rows(pairs: list[tuple[str, Paragraph]], widths: tuple[float, float]) -> Table:
        table = Table([[Paragraph(escape(label), styles["label"]), value]
                       for label, value in pairs], colWidths=widths)
        table.setStyle(TableStyle([
            ("VALIGN", (0, 0), (-1, -1), "TOP"),
            ("LEFTPADDING", (0, 0), (-1, -1), 0),
            ("BOTTOMPADDING", (0, 0), (-1, -1), 3),
            ("TOPPADDING", (0, 0), (-1, -1), 1),
        ]))
        return table

    margin = 0.8 * inch
    # SimpleDocTemplate's frame keeps 6 points of padding on each side.
    content_width = LETTER[0] - 2 * margin - 12
    story: list = [
        Paragraph("Certificate of completion", styles["title"]),
        Paragraph("This certificate records how the document below was executed in "
                  "counterparts: who signed, how, and when. All times are UTC; a date of "
                  "signing is the signer's calendar date, in their own time zone.",
                  styles["subtitle"]),
        rows([
            ("Document", para(info.title)),
            ("Envelope", para(info.envelope_id)),
            ("Document SHA-256", para(info.letter_sha256, "mono")),
            ("Completed", para(format_utc(info.completed_at))),
            ("Signers", para(str(len(info.signers)))),
        ], (1.45 * inch, content_width - 1.45 * inch)),
        Paragraph("Signers", styles["heading"]),
    ]

    image_width = 2.3 * inch
    image_room = image_width - 12
    for signer in info.signers:
        details = rows([(label, para(value, "cell" if label == "User agent" else "value"))
                        for label, value in _signer_rows(signer)],
                       (1.45 * inch, content_width - image_width - 1.45 * inch - 12))
        if signer.signature_png:
            _png_reader(signer.signature_png)  # a clear error if it is not an image
            natural_width, natural_height = _natural_size(signer.signature_png)
            # Shown no larger than it was made, as on the letter.
            scale = min(1.0, image_room / natural_width, 0.75 * inch / natural_height)
            picture: object = FlowImage(io.BytesIO(signer.signature_png),
                                        width=natural_width * scale,
                                        height=natural_height * scale, hAlign="LEFT")
        else:
            picture = para("Signed on paper" if signer.method == "paper" else "No image",
                           "label")
        block = Table([[para(signer.name, "signer"), ""], [details, picture]],
                      colWidths=(content_width - image_width, image_width))
        block.setStyle(TableStyle([
            ("VALIGN", (0, 0), (-1, -1), "TOP"),
            ("LEFTPADDING", (0, 0), (-1, -1), 6),
            ("TOPPADDING", (0, 0), (-1, 0), 6),
            ("BOX", (0, 0), (-1, -1), 0.5, rule),
            ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#f3f5f9")),
            ("SPAN", (0, 0), (-1, 0)),
        ]))
        story += [KeepTogether([block]), Spacer(1, 8)]

    story.append(Paragraph("Events", styles["heading"]))
    widths = (1.45 * inch, 1.35 * inch, 1.6 * inch)
    event_rows = [[Paragraph(h, styles["cellhead"]) for h in ("Time (UTC)", "Event", "By",
                                                              "Details")]]
    for at, kind, actor, detail in info.events:
        event_rows.append([para(format_utc(at), "cell"), para(kind, "cell"),
                           para(actor, "cell"), para(detail or "", "cell")])
    events = Table(event_rows, colWidths=(*widths, content_width - sum(widths)), repeatRows=1)
    events.setStyle(TableStyle([
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("BACKGROUND", (0, 0), (-1, 0), dark),
        ("ROWBACKGROUNDS", (0, 1), (-1, -1), [colors.white, colors.HexColor("#f3f5f9")]),
        ("LINEBELOW", (0, 1), (-1, -1), 0.25, rule),
        ("LEFTPADDING", (0, 0), (-1, -1), 4),
        ("RIGHTPADDING", (0, 0), (-1, -1), 4),
    ]))
    story.append(events)

    footer = f"Certificate of completion \u00b7 envelope {info.envelope_id}"

    def decorate(canvas: pdfcanvas.Canvas, doc: SimpleDocTemplate) -> None:
        canvas.saveState()
        canvas.setFont(regular, 7.5)
        canvas.setFillColor(grey)
        canvas.drawString(margin + 6, 0.5 * inch, _CONTROL.sub(" ", footer)[:120])
        canvas.drawRightString(LETTER[0] - margin - 6, 0.5 * inch, f"Page {doc.page}")
        canvas.restoreState()

    buffer = io.BytesIO()
    document = SimpleDocTemplate(buffer, pagesize=LETTER, leftMargin=margin, rightMargin=margin,
                                 topMargin=margin, bottomMargin=margin,
                                 title="Certificate of completion",
                                 author="Counterpart", subject=info.title)
    document.build(story, onFirstPage=decorate, onLaterPages=decorate)
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------
# Assembly

_METADATA_KEY = re.compile(r"/?[A-Za-z][A-Za-z0-9]{0,63}")
# A language tag as /Lang holds it (BCP 47, "en-US"): letters, digits and hyphens.
_LANGUAGE_TAG = re.compile(r"[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8}){0,4}")
_METADATA_MAX_CHARS = 1000


CONFORMED_TITLE = "Executed letter (conformed copy)"
CERTIFICATE_TITLE = "Certificate of completion"


def assemble_executed_pdf(conformed_pdf: bytes, signed_pages: Sequence[tuple[str, bytes]],
                          certificate: bytes, *, metadata: Mapping[str, str]) -> bytes:
    """Put the conformed letter, each signer's signed page and the certificate into one PDF.

    ``conformed_pdf`` is the letter with every signature and date of signing in place;
    ``signed_pages`` holds, in signer order, (signer name, that signer's signature page as
    signed: a one-page PDF). Each part gets a bookmark: "Executed letter (conformed copy)",
    "Counterpart signed by NAME", "Certificate of completion". ``metadata`` goes into the
    document information dictionary; keys are PDF names with or without the leading slash
    (``Title``, ``/CounterpartEnvelope``). Objects that are byte-for-byte the same in several
    parts (the font subsets) are stored once.
    """
    info = {}
    for key, value in metadata.items():
        if not _METADATA_KEY.fullmatch(key):
            raise ValueError(f"metadata key {key!r} is not a plain PDF name")
        if len(value) > _METADATA_MAX_CHARS:
            raise ValueError(f"metadata value of {key} is longer than {_METADATA_MAX_CHARS}")
        info["/" + key.lstrip("/")] = _CONTROL.sub(" ", value)

    writer = PdfWriter()
    parts = [(CONFORMED_TITLE, "The conformed letter", conformed_pdf)]
    parts += [(f"Counterpart signed by {_CONTROL.sub(' ', _clean_name(name))}",
               f"The signed page of {_clean_name(name)}", page) for name, page in signed_pages]
    parts.append((CERTIFICATE_TITLE, "The certificate of completion", certificate))
    for title, what, data in parts:
        writer.append(_pypdf_reader(data, what), outline_item=title, import_outline=False)
    writer.compress_identical_objects(remove_duplicates=True, remove_unreferenced=True)
    writer.page_mode = "/UseOutlines"
    writer.add_metadata({"/Producer": "Counterpart", **info})
    # The letter's language and title stay with it: screen readers pick their voice from /Lang,
    # and viewers show the title rather than the file name.
    language = _pypdf_reader(conformed_pdf, "The conformed letter").root_object.get("/Lang")
    if isinstance(language, str) and _LANGUAGE_TAG.fullmatch(language):
        writer.root_object[NameObject("/Lang")] = TextStringObject(language)
    if "/Title" in info:
        writer.root_object[NameObject("/ViewerPreferences")] = DictionaryObject(
            {NameObject("/DisplayDocTitle"): BooleanObject(True)})
    return _written(writer)


def outline_titles(pdf: bytes) -> list[tuple[str, int]]:
    """List a PDF's top-level bookmarks as (title, 0-based page index)."""
    reader = _pypdf_reader(pdf, "The PDF")
    return [(str(item.title), int(reader.get_destination_page_number(item) or 0))
            for item in reader.outline if not isinstance(item, list)]


# --------------------------------------------------------------------------------------------
# Uploaded counterparts, read in a child process with limits


SandboxResult = sandbox.SandboxResult


# The probe needs only pypdf: it does not import Counterpart, so it starts fast and sees none
# of the application's state. A file with only an owner password opens with the empty user
# password, as viewers open it; the probe then writes a decrypted copy to work on.
_UPLOAD_PROBE = """\
import base64, io, json
def answer(**fields):
    sys.stdout.write(json.dumps(fields))
    sys.stdout.flush()
    raise SystemExit(0)
data = sys.stdin.buffer.read()
from pypdf import PdfReader, PdfWriter  # failing to import under the limits is a crash
try:
    reader = PdfReader(io.BytesIO(data), strict=False)
    decrypted = False
    if reader.is_encrypted:
        try:
            decrypted = bool(reader.decrypt(""))
        except Exception as exc:
            answer(encrypted=True, detail=(str(exc) or type(exc).__name__)[:200])
        if not decrypted:
            answer(encrypted=True)
    count = len(reader.pages)
    if count <= 500:
        # Decode every page's content so that a damaged or hostile stream shows itself here.
        for page in reader.pages:
            page.mediabox
            contents = page.get_contents()
            if contents is not None:
                contents.get_data()
    copy = None
    if decrypted and count <= 500:
        buffer = io.BytesIO()
        PdfWriter(clone_from=reader).write(buffer)
        copy = base64.b64encode(buffer.getvalue()).decode("ascii")
    answer(pages=count, decrypted=copy)
except MemoryError:
    answer(limit="memory")
except RecursionError:
    answer(error="its structure is nested too deeply")
except Exception as exc:
    if type(exc).__name__ == "LimitReachedError":
        answer(limit=str(exc)[:200])
    answer(error=(str(exc) or type(exc).__name__)[:200])
"""

_UPLOAD_PROBE_MODULES = ("base64", "pypdf")

# Viewers accept bytes before the header (a mail gateway's or a scanner's prefix) within the
# first 1,024 bytes of the file; so does Counterpart.
HEADER_SEARCH_BYTES = 1024


def run_sandboxed(code: str, args: Sequence[str], data: bytes, *, time_limit: float,
                  memory_limit: int, pythonpath: Path | None = None,
                  preload: Sequence[str] = ()) -> SandboxResult:
    """Run Python ``code`` in a child process with limits, feed it ``data``, read its JSON.

    The child sets its limits before any import: ``memory_limit`` bytes of address space and
    about ``time_limit`` seconds of CPU; it is killed if it runs longer than ``time_limit``
    seconds of wall time. ``code`` reads ``data`` from stdin, finds ``args`` in
    ``sys.argv[3:]`` and writes one JSON object to stdout. ``pythonpath`` is put first on the
    child's import path. With ``preload`` (the modules ``code`` needs), the job runs in a warm
    child that imported them ahead of time, one job per child (see :mod:`workflow.sandbox`).
    A child that is killed, crashes or answers no JSON object is a "crash"; a child past the
    wall-time limit is a "timeout".
    """
    return sandbox.run(code, args, data, time_limit=time_limit, memory_limit=memory_limit,
                       pythonpath=pythonpath, preload=preload)


def display_name(filename: str) -> str:
    """Return an uploaded file's name as messages show it: no folders, no control characters,
    at most 80 characters."""
    return _display_name(filename)


def _display_name(filename: str) -> str:
    name = _CONTROL.sub("", Path(filename.replace("\\", "/")).name).strip()
    return (name[:80] + "\u2026" if len(name) > 80 else name) or "The uploaded file"


def _size(count: int) -> str:
    if count >= 1024 * 1024:
        return f"{count / (1024 * 1024):.1f}".removesuffix(".0") + " MB"
    return f"{max(1, round(count / 1024))} KB"


def _counts(counts: set[int]) -> str:
    ordered = [str(c) for c in sorted(counts)]
    text = ordered[0] if len(ordered) == 1 else ", ".join(ordered[:-1]) + " or " + ordered[-1]
    return f"{text} page" + ("" if ordered == ["1"] else "s")


@dataclass(frozen=True)
class UploadedPdf:
    """An uploaded PDF that passed the checks, and the copy of it to work on."""

    pages: int
    pdf: bytes
    """The file to process: the upload itself, or a copy without the bytes before its header
    and, for a file with only an owner password, decrypted. The upload stays the evidence."""
    skipped_bytes: int = 0
    """How many bytes came before the ``%PDF-`` header."""
    decrypted: bool = False
    """Whether the upload was encrypted with an owner password only."""


def read_upload(data: bytes, *, filename: str, allowed_page_counts: set[int], max_bytes: int,
                time_limit: float = UPLOAD_TIME_LIMIT,
                memory_limit: int = UPLOAD_MEMORY_LIMIT) -> UploadedPdf:
    """Check an uploaded scan of a signed counterpart and return the copy to work on.

    The file must be a PDF of at most ``max_bytes`` (its ``%PDF-`` header within the first
    1,024 bytes), readable, openable without a password (an owner password alone is fine), and
    with one of the allowed page counts. It is parsed in a child process limited to
    ``time_limit`` seconds and ``memory_limit`` bytes; every refusal is a DocumentError naming
    the file.
    """
    if not allowed_page_counts:
        raise ValueError("allowed_page_counts must not be empty")
    name = _display_name(filename)
    if not data:
        raise DocumentError(f"{name} is empty.")
    if len(data) > max_bytes:
        raise DocumentError(f"{name} is {_size(len(data))}; the largest file accepted is "
                            f"{_size(max_bytes)}.")
    skipped = data.find(b"%PDF-", 0, HEADER_SEARCH_BYTES + 5)
    if skipped < 0:
        raise DocumentError(f"{name} is not a PDF file (it does not start with %PDF-); "
                            f"scan the signed pages to PDF and upload that.")
    body = data[skipped:]
    result = run_sandboxed(_UPLOAD_PROBE, [], body, time_limit=time_limit,
                           memory_limit=memory_limit, preload=_UPLOAD_PROBE_MODULES)
    answer = result.answer
    if answer is None or "limit" in answer:
        raise DocumentError(f"{name}: could not be read as a PDF within the time limit "
                            f"({time_limit:g} s) and memory limit ({_size(memory_limit)}); it may "
                            f"be damaged or built to exhaust the server. Save or scan it again "
                            f"as a new PDF.")
    if answer.get("encrypted"):
        raise DocumentError(f"{name} is password-protected: it opens only with a password. "
                            f"Upload a copy without a password.")
    if "error" in answer:
        raise DocumentError(f"{name} could not be read as a PDF ({answer['error']}); it may be "
                            f"damaged or incomplete.")
    pages = int(answer["pages"])
    if pages not in allowed_page_counts:
        raise DocumentError(f"{name} has {pages} page{'' if pages == 1 else 's'}; a signed "
                            f"counterpart must have {_counts(allowed_page_counts)}.")
    copy = answer.get("decrypted")
    if isinstance(copy, str):
        return UploadedPdf(pages, base64.b64decode(copy), skipped, True)
    return UploadedPdf(pages, body, skipped, False)


def inspect_upload(data: bytes, *, filename: str, allowed_page_counts: set[int], max_bytes: int,
                   time_limit: float = UPLOAD_TIME_LIMIT,
                   memory_limit: int = UPLOAD_MEMORY_LIMIT) -> int:
    """Check an uploaded scan of a signed counterpart and return its number of pages.

    The checks are those of :func:`read_upload`.
    """
    return read_upload(data, filename=filename, allowed_page_counts=allowed_page_counts,
                       max_bytes=max_bytes, time_limit=time_limit,
                       memory_limit=memory_limit).pages
