"""Checks of a counterpart signed on paper: is the scan really signed, and by this signer?

A scan is compared with the blank counterpart it was printed from (the letter PDF the envelope
was sent with). Both signature pages are rasterised; the scan is registered to the blank (an
affine transform found by OpenCV's ECC alignment on the printed text, coarse to fine, so skew
of a few degrees, shifts, A4 against Letter scaling, grey paper and noise do not matter);
then whatever is dark in the scan and not in the blank is a new mark. New marks in the band
above the signer's own signature line are their ink; that line is the party's signature field
as the template placed it (:func:`workflow.pdfs.signing_fields`), never found by its text. A
scan with no new mark anywhere on its signature page is the unsigned document itself.

A scan that counts is also kept as an inert copy (:func:`inert_copy`): its pages redrawn as
pictures, so that nothing a hostile PDF can carry (scripts, launch actions, links, form
fields, attachments) reaches the executed letter that is assembled from it.

Uploads are untrusted: they are rasterised by pdfium in a child process with a time limit and
an address-space limit (:func:`workflow.pdfs.run_sandboxed`). The letter PDF is the system's
own and is rasterised here. Coordinates are PDF points with the origin at the bottom left of
the page unless said otherwise; images are numpy arrays, row 0 at the top.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import pypdfium2 as pdfium
from PIL import Image
from reportlab.lib.utils import ImageReader
from reportlab.pdfgen import canvas as pdfcanvas
from sqlalchemy import select
from sqlalchemy.orm import Session

from .errors import CounterpartError, DocumentError
from .models import Document
from .pdfs import (
    UPLOAD_MEMORY_LIMIT,
    UPLOAD_TIME_LIMIT,
    Box,
    SigningField,
    run_sandboxed,
    signing_field,
    signing_fields,
)

__all__ = [
    "ScanCheck",
    "SYSTEM_DOCUMENT_KINDS",
    "check_scan",
    "rasterise_upload",
    "inert_copy",
    "INERT_DPI",
    "upload_page_png",
    "blank_page_png",
    "system_copy_of",
    "parse_signed_on",
    "ink_region",
    "PIXELS_PER_POINT",
]

PIXELS_PER_POINT = 2.0
"""Resolution of the comparison: 144 dots an inch, so a pen stroke is a few pixels wide."""

# The band where a signer's ink is looked for: above their line, up to about 50 points, and
# the line's width plus a margin each side (signatures start early and run long).
INK_BAND_HEIGHT = 50.0
INK_BAND_MARGIN = 18.0
# Below the line: some people sign under their printed name, so ink counts down to this far
# below the line: the line of the name printed under it, and about 40 points more (the printed
# words themselves are not new marks).
INK_BELOW_LINE = 54.0
# A run of underscores at least this wide is another signer's line: its band is theirs.
SIGNATURE_LINE_MIN_WIDTH = 72.0
# A new mark: at least this dark (0 paper, 1 the darkest print) after a light blur, in a
# connected patch of at least this many square points.
MARK_DARKNESS = 0.35
MARK_MIN_AREA = 2.0
# Ink: new marks of at least this many square points, at least this wide or tall.
INK_MIN_AREA = 20.0
INK_MIN_EXTENT = 12.0
# A registration whose correlation with the blank is lower than this did not find the page.
MATCH_CORRELATION = 0.55
# The printed text is widened by this many points before it is subtracted, to absorb the
# thickening of toner and what registration leaves over.
TEXT_SLACK = 1.25
# Rasterised scan pages are at most this many pixels on a side.
MAX_SIDE_PX = 3000

SYSTEM_DOCUMENT_KINDS = ("letter_pdf", "signed_counterpart", "executed_pdf")
"""Documents the system itself produces: a scan that is one of these is not signed on paper."""

_UNDERSCORE = 0x5F


# --------------------------------------------------------------------------------------------
# Rasterising


_RASTER_PROBE = """\
import base64, json
def answer(**fields):
    sys.stdout.write(json.dumps(fields))
    sys.stdout.flush()
    raise SystemExit(0)
data = sys.stdin.buffer.read()
width, max_side, first, last, mode = (int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]),
                                      int(sys.argv[6]), sys.argv[7])
dpi = float(sys.argv[8]) if len(sys.argv) > 8 else 0.0
import pypdfium2 as pdfium  # failing to import under the limits is a crash, not a bad file
try:
    document = pdfium.PdfDocument(data)
    count = len(document)
    pages = []
    for index in range(max(0, first), min(count, last)):
        page = document[index]
        w, h = page.get_size()
        if not (w >= 1 and h >= 1):
            answer(error=f"page {index + 1} has no size")
        scale = min(dpi / 72 if dpi > 0 else width / w, max_side / h, max_side / w)
        image = page.render(scale=scale, grayscale=(mode == "L")).to_pil().convert(mode)
        pages.append({"index": index, "width": image.width, "height": image.height,
                      "points": [w, h],
                      "data": base64.b64encode(image.tobytes()).decode("ascii")})
        page.close()
    answer(count=count, pages=pages)
except MemoryError:
    answer(limit="memory")
except Exception as exc:
    answer(error=(str(exc) or type(exc).__name__)[:200])
"""


@dataclass(frozen=True)
class RasterPage:
    """One rasterised page: its index in the PDF, its pixels, and its size in points."""

    index: int
    pixels: np.ndarray
    """Grey levels (uint8, height x width) or RGB (height x width x 3)."""
    points: tuple[float, float]


def rasterise_upload(pdf: bytes, *, width_px: int, pages: range | None = None,
                     mode: str = "L", name: str = "The uploaded file",
                     time_limit: float = UPLOAD_TIME_LIMIT,
                     memory_limit: int = UPLOAD_MEMORY_LIMIT,
                     dpi: float | None = None) -> list[RasterPage]:
    """Rasterise pages of an untrusted PDF in a limited child process.

    Each page is drawn ``width_px`` pixels wide, or at ``dpi`` dots an inch when given (at
    most 3,000 pixels on a side), in grey (``mode`` "L") or colour ("RGB"). Raises
    DocumentError naming the file if pdfium cannot draw it within the limits.
    """
    wanted = pages if pages is not None else range(0, 10_000)
    result = run_sandboxed(_RASTER_PROBE, [str(int(width_px)), str(MAX_SIDE_PX),
                                           str(wanted.start), str(wanted.stop), mode,
                                           str(float(dpi or 0))],
                           pdf, time_limit=time_limit, memory_limit=memory_limit)
    answer = result.answer
    if answer is None or "limit" in answer:
        raise DocumentError(f"{name}: its pages could not be drawn within the time limit "
                            f"({time_limit:g} s) and memory limit; it may be damaged. Save or "
                            f"scan it again as a new PDF.")
    if "error" in answer:
        raise DocumentError(f"{name}: its pages could not be drawn ({answer['error']}).")
    channels = 1 if mode == "L" else 3
    out = []
    for page in answer["pages"]:
        width, height = int(page["width"]), int(page["height"])
        data = base64.b64decode(page["data"])
        if len(data) != width * height * channels:
            raise DocumentError(f"{name}: page {int(page['index']) + 1} could not be drawn.")
        shape = (height, width) if channels == 1 else (height, width, channels)
        out.append(RasterPage(int(page["index"]), np.frombuffer(data, np.uint8).reshape(shape),
                              (float(page["points"][0]), float(page["points"][1]))))
    return out


INERT_DPI = 150.0
"""Resolution of the inert copy of a scan: what a scanner's default gives."""
INERT_JPEG_QUALITY = 85


def inert_copy(pdf: bytes, *, name: str = "The uploaded file", dpi: float = INERT_DPI) -> bytes:
    """Redraw an untrusted PDF as pictures only: a PDF to keep and assemble from safely.

    Every page is rasterised in colour by pdfium in a limited child process and becomes one
    JPEG image filling a page of the same size in points; nothing else of the upload is kept,
    so the copy has no actions, scripts, links, form fields, attachments or fonts. Raises
    DocumentError naming the file if its pages cannot be drawn within the limits.
    """
    pages = rasterise_upload(pdf, width_px=0, mode="RGB", name=name, dpi=dpi)
    if not pages:
        raise DocumentError(f"{name} has no page to keep.")
    buffer = io.BytesIO()
    canvas = pdfcanvas.Canvas(buffer, pageCompression=1, invariant=1)
    canvas.setAuthor("Counterpart")
    canvas.setTitle("Inert copy of an uploaded scan")
    canvas.setProducer("Counterpart")
    for page in pages:
        width, height = page.points
        picture = io.BytesIO()
        Image.fromarray(page.pixels).save(picture, format="JPEG", quality=INERT_JPEG_QUALITY,
                                          dpi=(dpi, dpi))
        picture.seek(0)
        canvas.setPageSize((width, height))
        canvas.drawImage(ImageReader(picture), 0, 0, width=width, height=height)
        canvas.showPage()
    canvas.save()
    return buffer.getvalue()


def _render_trusted(pdf: bytes, index: int, scale: float, *, grey: bool = True) -> np.ndarray:
    """Rasterise a page of a PDF this system made, here in the process."""
    document = pdfium.PdfDocument(pdf)
    try:
        page = document[index]
        image = page.render(scale=scale, grayscale=grey).to_pil().convert("L" if grey
                                                                          else "RGB")
        page.close()
    finally:
        document.close()
    return np.asarray(image)


def _png(pixels: np.ndarray, dpi: float | None = None) -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(pixels)
    if dpi:
        image.save(buffer, format="PNG", dpi=(dpi, dpi))
    else:
        image.save(buffer, format="PNG")
    return buffer.getvalue()


def upload_page_png(pdf: bytes, page_index: int, *, width_px: int = 480,
                    name: str = "The uploaded file") -> bytes:
    """Draw one page of an uploaded (untrusted) PDF as a PNG thumbnail, in a child process."""
    pages = rasterise_upload(pdf, width_px=width_px, pages=range(page_index, page_index + 1),
                             mode="RGB", name=name)
    if not pages:
        raise DocumentError(f"{name} has no page {page_index + 1}.")
    return _png(pages[0].pixels)


def blank_page_png(letter_pdf: bytes, page_index: int, *, width_px: int = 480) -> bytes:
    """Draw one page of the system's own letter PDF as a PNG thumbnail."""
    document = pdfium.PdfDocument(letter_pdf)
    try:
        width = document[page_index].get_size()[0]
    finally:
        document.close()
    return _png(_render_trusted(letter_pdf, page_index, width_px / width, grey=False))


# --------------------------------------------------------------------------------------------
# Registration


def _darkness(grey: np.ndarray) -> np.ndarray:
    """Map grey levels to darkness: 0 for the paper, 1 for the darkest print (float32)."""
    counts = np.cumsum(np.bincount(grey.ravel(), minlength=256)) / grey.size
    paper = float(np.searchsorted(counts, 0.60))
    ink = min(float(np.searchsorted(counts, 0.005)), paper - 40.0)
    values = grey.astype(np.float32)
    return np.clip((paper - values) / max(paper - ink, 1.0), 0.0, 1.0)


@dataclass(frozen=True)
class _Registration:
    warp: np.ndarray
    """2 x 3 affine matrix from blank pixels to scan pixels."""
    correlation: float


def _ecc(template: np.ndarray, moving: np.ndarray, warp: np.ndarray, levels: Sequence[int]
         ) -> _Registration | None:
    """Refine ``warp`` coarse to fine with ECC; None when it does not converge."""
    height, width = template.shape
    m_height, m_width = moving.shape
    correlation = 0.0
    warp = warp.astype(np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 80, 1e-5)
    for level in levels:
        size = (max(8, width // level), max(8, height // level))
        m_size = (max(8, m_width // level), max(8, m_height // level))
        small_t = cv2.GaussianBlur(cv2.resize(template, size, interpolation=cv2.INTER_AREA),
                                   (0, 0), 2.0)
        small_m = cv2.GaussianBlur(cv2.resize(moving, m_size, interpolation=cv2.INTER_AREA),
                                   (0, 0), 2.0)
        scaled = warp.copy()
        scaled[:, 2] /= level
        try:
            # The stubs lack the overload with the Gaussian filter size.
            correlation, scaled = cv2.findTransformECC(  # type: ignore[call-overload]
                small_t, small_m, scaled, cv2.MOTION_AFFINE, criteria, None, 1)
        except cv2.error:
            return None
        warp = scaled.copy()
        warp[:, 2] *= level
    return _Registration(warp, float(correlation))


def _initial_warps(blank_shape: tuple[int, ...], scan_shape: tuple[int, ...]
                   ) -> list[np.ndarray]:
    """Starting guesses: the scan page stretched onto the blank's, or fitted and centred."""
    height, width = blank_shape[:2]
    s_height, s_width = scan_shape[:2]
    stretched = np.array([[s_width / width, 0, 0], [0, s_height / height, 0]], np.float32)
    fit = max(s_width / width, s_height / height)
    centred = np.array([[fit, 0, (s_width - width * fit) / 2],
                        [0, fit, (s_height - height * fit) / 2]], np.float32)
    return [stretched, centred]


def _register(blank: np.ndarray, scan: np.ndarray, levels: Sequence[int]
              ) -> _Registration | None:
    best: _Registration | None = None
    for start in _initial_warps(blank.shape, scan.shape):
        found = _ecc(blank, scan, start, levels)
        if found is not None and (best is None or found.correlation > best.correlation):
            best = found
        if best is not None and best.correlation >= 0.8:
            break
    return best


# --------------------------------------------------------------------------------------------
# Comparing


@dataclass(frozen=True)
class ScanCheck:
    """What the comparison of a scan with its blank counterpart found for one signer."""

    signature_page: int
    """The 0-based index of the scan's page that best matches the blank's signature page."""
    matched: bool
    """Whether that page could be lined up with the blank's signature page."""
    unchanged: bool
    """Lined up, and nothing on it that the blank does not have: the unsigned document."""
    ink_found: bool
    """New marks in the band above this signer's own signature line."""
    crop_box: Box
    """PDF points on the letter's signature page: the signer's ink (or the band, without ink)."""
    signature_png: bytes
    """The scan's new marks in ``crop_box``: transparent background, covering it exactly."""
    correlation: float


def ink_region(field: SigningField) -> Box:
    """Return the band where a party's ink is looked for, in PDF points on their page: above
    their signature field's line, and down through the name printed under it."""
    line, page = field.line_box, field.page_box
    return (max(page[0], line[0] - INK_BAND_MARGIN),
            max(page[1], line[1] - INK_BELOW_LINE),
            min(page[2], line[2] + INK_BAND_MARGIN),
            min(page[3], line[3] + INK_BAND_HEIGHT))


def _fill_in_blanks(letter_pdf: bytes, spot: SigningField) -> list[Box]:
    """Boxes of the other blanks on the signature page: handwriting there is not this party's.

    The other parties' signature fields, with their whole bands; every date field (a date
    written by hand is not a signature), with room above for the writing; and any other run of
    three or more underscores the template prints: a short one is a blank to fill in, a long
    one another line to sign, with its whole band.
    """
    fields = signing_fields(letter_pdf)
    boxes: list[Box] = []
    for other in fields.signatures.values():
        if other.page_index == spot.page_index and other.role != spot.role:
            line = other.line_box
            boxes.append((line[0] - INK_BAND_MARGIN, line[1] - 3, line[2] + INK_BAND_MARGIN,
                          line[3] + INK_BAND_HEIGHT))
    for dated in fields.dates.values():
        if dated.page_index == spot.page_index:
            box = dated.line_box
            boxes.append((box[0] - 4, box[1] - 3, box[2] + 4, box[3] + 14))
    # The fields' own rules are placed above; other rules of underscores are found below.
    printed_fields = [f.line_box for f in (*fields.signatures.values(), *fields.dates.values())
                      if f.page_index == spot.page_index]
    document = pdfium.PdfDocument(letter_pdf)
    try:
        page = document[spot.page_index]
        text = page.get_textpage()
        count = text.count_chars()
        index = 0
        while index < count:
            if text.get_text_range(index, 1) != "_":
                index += 1
                continue
            end = index
            while end + 1 < count and text.get_text_range(end + 1, 1) == "_":
                end += 1
            if end - index >= 2:
                chars = [text.get_charbox(k) for k in range(index, end + 1)]
                box = (min(c[0] for c in chars), min(c[1] for c in chars),
                       max(c[2] for c in chars), max(c[3] for c in chars))
                if not any(_same_line(box, known) for known in printed_fields):
                    if box[2] - box[0] >= SIGNATURE_LINE_MIN_WIDTH:
                        boxes.append((box[0] - INK_BAND_MARGIN, box[1] - 3,
                                      box[2] + INK_BAND_MARGIN, box[3] + INK_BAND_HEIGHT))
                    else:
                        boxes.append((box[0] - 4, box[1] - 3, box[2] + 4, box[3] + 14))
            index = end + 1
        text.close()
        page.close()
    finally:
        document.close()
    return boxes


def _same_line(box: Box, field: Box) -> bool:
    """Whether a rule of underscores is a field's own: on its line, within its ends."""
    return (field[0] - 1 <= box[0] and box[2] <= field[2] + 1
            and box[1] <= field[3] + 1 and field[1] - 1 <= box[3])


def _pixel_box(box: Box, page_height: float, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """Turn a box in PDF points into pixel bounds (left, top, right, bottom), clipped."""
    x0, y0, x1, y1 = box
    height, width = shape[:2]
    left = int(np.clip(np.floor(x0 * PIXELS_PER_POINT), 0, width))
    right = int(np.clip(np.ceil(x1 * PIXELS_PER_POINT), 0, width))
    top = int(np.clip(np.floor((page_height - y1) * PIXELS_PER_POINT), 0, height))
    bottom = int(np.clip(np.ceil((page_height - y0) * PIXELS_PER_POINT), 0, height))
    return left, top, right, bottom


def _new_marks(blank: np.ndarray, warped: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the strength of the scan's new marks (float32) and their mask (uint8 0/1).

    Tiny specks (noise, dust) are not marks.
    """
    slack = max(1, round(TEXT_SLACK * PIXELS_PER_POINT))
    printed = cv2.dilate(blank, np.ones((2 * slack + 1, 2 * slack + 1), np.uint8))
    strength = np.clip(warped - printed, 0.0, 1.0)
    smooth = cv2.GaussianBlur(strength, (0, 0), 1.0)
    mask = cv2.morphologyEx((smooth > MARK_DARKNESS).astype(np.uint8), cv2.MORPH_OPEN,
                            np.ones((2, 2), np.uint8))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    smallest = MARK_MIN_AREA * PIXELS_PER_POINT ** 2
    keep = np.zeros(count, np.uint8)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= smallest
    return strength, keep[labels]


def _ink_png(strength: np.ndarray, mask: np.ndarray) -> bytes:
    """Draw new marks as dark ink on a transparent background, edges kept soft."""
    near = cv2.dilate(mask, np.ones((3, 3), np.uint8)).astype(np.float32)
    alpha = np.clip(strength * 1.6, 0.0, 1.0) * near
    rgba = np.zeros((*strength.shape, 4), np.uint8)
    rgba[..., 0:3] = (24, 24, 32)
    rgba[..., 3] = np.round(alpha * 255).astype(np.uint8)
    return _png(rgba, dpi=72 * PIXELS_PER_POINT)


def check_scan(letter_pdf: bytes, scan_pages: Sequence[RasterPage], role: str) -> ScanCheck:
    """Compare a rasterised scan with the letter's signature page for one party.

    ``scan_pages`` come from :func:`rasterise_upload` (grey), one or more pages. The page that
    lines up best with the page of the party's signature field is the signature page; the new
    marks on it are compared with the party's band (:func:`ink_region`).
    """
    if not scan_pages:
        raise ValueError("check_scan needs at least one scan page")
    spot = signing_field(letter_pdf, role)
    page_height = spot.page_box[3] - spot.page_box[1]
    blank = _darkness(_render_trusted(letter_pdf, spot.page_index, PIXELS_PER_POINT))
    scans = [_darkness(page.pixels) for page in scan_pages]

    # The signature page is the one that lines up best at a coarse scale.
    best_index, best = 0, None
    if len(scans) > 1:
        for index, scan in enumerate(scans):
            found = _register(blank, scan, (8,))
            if found is not None and (best is None or found.correlation > best.correlation):
                best_index, best = index, found
    registration = None
    if best is not None:
        registration = _ecc(blank, scans[best_index], best.warp, (4, 2))
    if registration is None:
        registration = _register(blank, scans[best_index], (8, 4, 2))
    region = ink_region(spot)
    # Bring the band to the page's own origin (a media box need not start at 0, 0).
    local = (region[0] - spot.page_box[0], region[1] - spot.page_box[1],
             region[2] - spot.page_box[0], region[3] - spot.page_box[1])
    signature_page = scan_pages[best_index].index
    if registration is None or registration.correlation < MATCH_CORRELATION:
        empty = np.zeros((max(1, round((local[3] - local[1]) * PIXELS_PER_POINT)),
                          max(1, round((local[2] - local[0]) * PIXELS_PER_POINT))), np.float32)
        return ScanCheck(signature_page, False, False, False, region,
                         _ink_png(empty, empty.astype(np.uint8)),
                         registration.correlation if registration else 0.0)

    warped = cv2.warpAffine(scans[best_index], registration.warp,
                            (blank.shape[1], blank.shape[0]),
                            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    strength, marks = _new_marks(blank, warped)
    smallest = INK_MIN_AREA * PIXELS_PER_POINT ** 2
    unchanged = int(marks.sum()) < smallest

    left, top, right, bottom = _pixel_box(local, page_height, blank.shape)
    band = marks[top:bottom, left:right].copy()
    for other in _fill_in_blanks(letter_pdf, spot):
        shifted = (other[0] - spot.page_box[0], other[1] - spot.page_box[1],
                   other[2] - spot.page_box[0], other[3] - spot.page_box[1])
        o_left, o_top, o_right, o_bottom = _pixel_box(shifted, page_height, blank.shape)
        band[max(0, o_top - top):max(0, o_bottom - top),
             max(0, o_left - left):max(0, o_right - left)] = 0
    ink_found = False
    crop = (left, top, right, bottom)
    if int(band.sum()) >= smallest:
        rows, cols = np.nonzero(band)
        extent = max(cols.max() - cols.min(), rows.max() - rows.min()) / PIXELS_PER_POINT
        if extent >= INK_MIN_EXTENT:
            ink_found = True
            pad = round(3 * PIXELS_PER_POINT)
            crop = (max(0, left + int(cols.min()) - pad), max(0, top + int(rows.min()) - pad),
                    min(blank.shape[1], left + int(cols.max()) + 1 + pad),
                    min(blank.shape[0], top + int(rows.max()) + 1 + pad))
    c_left, c_top, c_right, c_bottom = crop
    crop_marks = np.zeros_like(marks)
    crop_marks[top:bottom, left:right] = band
    png = _ink_png(strength[c_top:c_bottom, c_left:c_right],
                   crop_marks[c_top:c_bottom, c_left:c_right] if ink_found
                   else marks[c_top:c_bottom, c_left:c_right])
    crop_box = (spot.page_box[0] + c_left / PIXELS_PER_POINT,
                spot.page_box[1] + page_height - c_bottom / PIXELS_PER_POINT,
                spot.page_box[0] + c_right / PIXELS_PER_POINT,
                spot.page_box[1] + page_height - c_top / PIXELS_PER_POINT)
    return ScanCheck(signature_page, True, unchanged, ink_found,
                     tuple(round(v, 2) for v in crop_box),  # type: ignore[arg-type]
                     png, registration.correlation)


# --------------------------------------------------------------------------------------------
# Copies of the system's own documents, and the date of signing


def system_copy_of(session: Session, sha256: str) -> Document | None:
    """Return the stored document the system produced with exactly these bytes, if any."""
    return session.scalar(select(Document).where(
        Document.blob_sha256 == sha256, Document.kind.in_(SYSTEM_DOCUMENT_KINDS))
        .order_by(Document.id).limit(1))


# The earliest and the latest time zones in use: a date is "today" somewhere between them.
_EARLIEST_ZONE = dt.timezone(dt.timedelta(hours=-12))
_LATEST_ZONE = dt.timezone(dt.timedelta(hours=14))


def parse_signed_on(value: object, *, not_before: dt.datetime, now: dt.datetime,
                    field: str = "signed_on") -> dt.date:
    """Read the date a signer wrote by their signature: YYYY-MM-DD, a real date, not in the
    future anywhere on Earth (UTC+14), not before ``not_before`` anywhere (UTC-12).

    Raises CounterpartError naming ``field``.
    """
    if not isinstance(value, str | dt.date) or (isinstance(value, str) and not value.strip()):
        raise CounterpartError(f"{field}: give the date the signer signed on paper "
                               "(YYYY-MM-DD).")
    if isinstance(value, dt.datetime):
        raise CounterpartError(f"{field}: give a date (YYYY-MM-DD), not a time.")
    if isinstance(value, dt.date):
        day = value
    else:
        text = value.strip()
        try:
            if len(text) != 10:
                raise ValueError
            day = dt.date.fromisoformat(text)
        except ValueError:
            raise CounterpartError(f"{field}: {text[:40]!r} is not a date written YYYY-MM-DD "
                                   "(such as 2006-07-28).") from None
    latest = now.astimezone(_LATEST_ZONE).date()
    if day > latest:
        raise CounterpartError(f"{field}: {day.isoformat()} is in the future; give the date "
                               "the signer signed.")
    earliest = not_before.astimezone(_EARLIEST_ZONE).date()
    if day < earliest:
        raise CounterpartError(f"{field}: {day.isoformat()} is before the letter was ready to "
                               f"sign ({earliest.isoformat()}); give the date the signer signed.")
    return day
