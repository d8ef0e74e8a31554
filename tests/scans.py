"""Scans of counterparts signed (or not) on paper, made the way a scanner makes them.

The blank counterpart (the letter PDF) is rasterised, a pen scribble is drawn on the chosen
signers' lines, and the sheet is printed on A4 or Letter, skewed, shifted, greyed and speckled,
then saved as an image-only PDF, as a scanner saves it.
"""

from __future__ import annotations

import io
import random
from collections.abc import Sequence

import numpy as np
import pypdfium2 as pdfium
from PIL import Image, ImageDraw

from workflow.pdfs import signing_fields

A4 = (595.28, 841.89)
LETTER = (612.0, 792.0)


def _render(pdf: bytes, index: int, dpi: float) -> Image.Image:
    document = pdfium.PdfDocument(pdf)
    try:
        page = document[index]
        return page.render(scale=dpi / 72).to_pil().convert("L")
    finally:
        document.close()


def scribble(draw: ImageDraw.ImageDraw, line_box: Sequence[float], page_height: float,
             dpi: float, seed: int, *, width_pt: float = 1.4, span: float = 0.75) -> None:
    """Draw a signature-like pen stroke resting on a signature line (PDF points in)."""
    rnd = random.Random(seed)
    x0, y0, x1, _ = line_box
    scale = dpi / 72
    points = []
    steps = 14
    for step in range(steps):
        x = x0 + 8 + (x1 - x0) * span * step / (steps - 1)
        y = y0 + 2 + rnd.random() * 24 if step % 3 else y0 + 1
        points.append((x * scale, (page_height - y) * scale))
    draw.line(points, fill=25, width=max(1, round(width_pt * scale)), joint="curve")


def mark(draw: ImageDraw.ImageDraw, box: Sequence[float], page_height: float,
         dpi: float) -> None:
    """Draw a filled dark box (PDF points), as a stray mark or a stamp."""
    scale = dpi / 72
    x0, y0, x1, y1 = box
    draw.rectangle([x0 * scale, (page_height - y1) * scale, x1 * scale,
                    (page_height - y0) * scale], fill=20)


def scan_of(letter_pdf: bytes, *, signed_by: Sequence[str] = (),
            pages: Sequence[int] | None = None,
            angle: float = 1.8, shift: tuple[float, float] = (10.0, -8.0), paper: str = "a4",
            noise: float = 12.0, dpi: float = 100.0, seed: int = 1,
            marks: Sequence[Sequence[float]] = ()) -> bytes:
    """Return an image-only PDF scan of pages of the letter (its signature page by default).

    ``signed_by`` parties (roles) get a scribble on their signature field's line; ``marks``
    are dark boxes (PDF points) drawn on the signature page. Each page is put on ``paper``
    ("a4" or "letter") scaled to fit, turned by ``angle`` degrees, shifted by ``shift``
    points, greyed and given noise.
    """
    fields = signing_fields(letter_pdf)
    spots = {role: fields.signature(role) for role in signed_by}
    signature_page = (next(iter(spots.values())) if spots
                      else next(iter(fields.signatures.values()))).page_index
    indices = list(pages) if pages is not None else [signature_page]
    sheets = []
    rng = np.random.default_rng(seed)
    for index in indices:
        image = _render(letter_pdf, index, dpi)
        page_height = image.height * 72 / dpi
        draw = ImageDraw.Draw(image)
        if index == signature_page:
            for k, (_name, spot) in enumerate(spots.items()):
                scribble(draw, spot.line_box, page_height, dpi, seed + k)
            for box in marks:
                mark(draw, box, page_height, dpi)
        width_pt, height_pt = A4 if paper == "a4" else LETTER
        width, height = round(width_pt * dpi / 72), round(height_pt * dpi / 72)
        fit = min(width / image.width, height / image.height)
        image = image.resize((round(image.width * fit), round(image.height * fit)),
                             Image.Resampling.LANCZOS)
        sheet = Image.new("L", (width, height), 255)
        sheet.paste(image, ((width - image.width) // 2, (height - image.height) // 2))
        sheet = sheet.rotate(angle, resample=Image.Resampling.BICUBIC, fillcolor=255,
                             translate=(shift[0] * dpi / 72, shift[1] * dpi / 72))
        grey = 236 - (255 - np.asarray(sheet).astype(np.float32)) * 0.82
        grey += rng.normal(0, noise, grey.shape)
        sheets.append(Image.fromarray(np.clip(grey, 0, 255).astype(np.uint8)))
    buffer = io.BytesIO()
    sheets[0].save(buffer, "PDF", resolution=dpi, save_all=True, append_images=sheets[1:])
    return buffer.getvalue()
