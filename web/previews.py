"""Pictures of a PDF's pages for the letter page, rendered with pdfium and kept in memory.

A page picture depends only on the PDF's bytes, so pictures, page counts and the text of each
page (for reading the letter with a screen reader, :meth:`PagePreviews.page_texts`) are
cached under the document's SHA-256; the cache of pictures is bounded by the bytes it holds.
A picture shows a page of a letter as plainly as the PDF does, so browsers and proxies must
not keep it (:func:`send_page_picture`: ``Cache-Control: no-store``); the server's cache makes
it cheap to send again.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import pypdfium2 as pdfium
from flask import Flask, current_app, make_response, request
from werkzeug.wrappers import Response

from workflow.errors import DocumentError

__all__ = ["PagePreviews", "init_app", "get_previews", "send_page_picture",
           "executed_preview_sha"]

EXTENSION = "counterpart.previews"
# pdfium is not thread-safe: one rendering at a time in the whole process.
_PDFIUM_LOCK = threading.Lock()
# The texts of this many PDFs are kept (a few kilobytes each).
_KEPT_TEXTS = 256


class PagePreviews:
    """Page counts and PNG pictures of PDFs, cached by SHA-256."""

    def __init__(self, dpi: int = 100, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.dpi = dpi
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._pngs: OrderedDict[tuple[str, int, bool], bytes] = OrderedDict()
        self._held = 0
        self._sizes: dict[str, list[tuple[int, int]]] = {}
        self._texts: OrderedDict[str, list[list[str]]] = OrderedDict()

    def page_sizes(self, sha256: str, load: Callable[[], bytes]) -> list[tuple[int, int]]:
        """Return each page's picture size in pixels (width, height); ``load`` gives the PDF."""
        with self._lock:
            if sha256 in self._sizes:
                return self._sizes[sha256]
        scale = self.dpi / 72
        with _PDFIUM_LOCK:
            pdf = _open(load())
            try:
                sizes = [(round(w * scale), round(h * scale))
                         for w, h in (pdf.get_page_size(i) for i in range(len(pdf)))]
            finally:
                pdf.close()
        with self._lock:
            if len(self._sizes) > 1024:
                self._sizes.clear()
            self._sizes[sha256] = sizes
        return sizes

    def page_texts(self, sha256: str, load: Callable[[], bytes]) -> list[list[str]]:
        """Return the text of each page as its paragraphs, in reading order.

        A line starts a new paragraph when it stands apart from the line above (a gap of more
        than half a line) or is indented past it; the lines of one paragraph are joined with
        a space. Pieces of text side by side on one line (a table's cells, two signature
        blocks) are joined with a space too. ``load`` gives the PDF.
        """
        with self._lock:
            if sha256 in self._texts:
                self._texts.move_to_end(sha256)
                return self._texts[sha256]
        with _PDFIUM_LOCK:
            pdf = _open(load())
            try:
                texts = [_page_paragraphs(pdf[index]) for index in range(len(pdf))]
            finally:
                pdf.close()
        with self._lock:
            self._texts[sha256] = texts
            while len(self._texts) > _KEPT_TEXTS:
                self._texts.popitem(last=False)
        return texts

    def png(self, sha256: str, page: int, load: Callable[[], bytes], *,
            color: bool = False) -> bytes | None:
        """Return page ``page`` (from 1) as PNG, or None if the PDF has no such page.

        Pages are grey unless ``color`` is asked for: a typed letter loses nothing, and its
        picture is a fifth of the size and three times as fast to make.
        """
        key = (sha256, page, color)
        with self._lock:
            if key in self._pngs:
                self._pngs.move_to_end(key)
                return self._pngs[key]
        with _PDFIUM_LOCK:
            pdf = _open(load())
            try:
                if not 1 <= page <= len(pdf):
                    return None
                pdf_page = pdf[page - 1]
                try:
                    bitmap = pdf_page.render(scale=self.dpi / 72, grayscale=not color)
                    image = bitmap.to_pil()
                finally:
                    pdf_page.close()
            finally:
                pdf.close()
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        data = buffer.getvalue()
        with self._lock:
            if key not in self._pngs:
                self._pngs[key] = data
                self._held += len(data)
            while self._held > self.max_bytes and len(self._pngs) > 1:
                _, dropped = self._pngs.popitem(last=False)
                self._held -= len(dropped)
        return data


def _page_paragraphs(page: pdfium.PdfPage) -> list[str]:
    """Read one page's text as paragraphs (see :meth:`PagePreviews.page_texts`)."""
    try:
        textpage = page.get_textpage()
        try:
            # pdfium gives its text as rectangles, each a run of text on one line, in order.
            lines: list[list[float | str]] = []  # [left, bottom, top, text]
            for index in range(textpage.count_rects()):
                left, bottom, right, top = textpage.get_rect(index)
                text = " ".join(textpage.get_text_bounded(left, bottom, right, top).split())
                if not text:
                    continue
                if lines and bottom < float(lines[-1][2]) and top > float(lines[-1][1]):
                    lines[-1][3] = f"{lines[-1][3]} {text}"  # beside the last: the same line
                    lines[-1][0] = min(float(lines[-1][0]), left)
                else:
                    lines.append([left, bottom, top, text])
        finally:
            textpage.close()
    finally:
        page.close()
    paragraphs: list[str] = []
    previous: list[float | str] | None = None
    for line in lines:
        left, bottom, top, text = float(line[0]), float(line[1]), float(line[2]), str(line[3])
        if previous is not None:
            height = max(top - bottom, 1.0)
            gap = float(previous[1]) - top
            indented = left - float(previous[0]) > height
            if gap <= height / 2 and not indented:
                paragraphs[-1] = f"{paragraphs[-1]} {text}"
                previous = line
                continue
        paragraphs.append(text)
        previous = line
    return paragraphs


def _open(data: bytes) -> pdfium.PdfDocument:
    try:
        return pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        raise DocumentError(f"The PDF cannot be read for a preview ({exc}).") from exc


def init_app(app: Flask) -> PagePreviews:
    """Give the app its page preview cache."""
    previews = PagePreviews(dpi=app.config["PREVIEW_DPI"])
    app.extensions[EXTENSION] = previews
    return previews


def get_previews() -> PagePreviews:
    """Return the running app's page previews."""
    return current_app.extensions[EXTENSION]


def send_page_picture(png: bytes, *, etag: str | None = None) -> Response:
    """Answer with a page picture that no browser or proxy stores (``no-store``)."""
    response = make_response(png)
    response.mimetype = "image/png"
    response.headers["Cache-Control"] = "no-store"
    if etag:
        response.set_etag(etag)
        response.make_conditional(request)  # (answers 304 itself when the ETag matches)
    return response


def executed_preview_sha(envelope: Mapping[str, Any] | None,
                         version: Mapping[str, Any]) -> str | None:
    """Return the SHA-256 of the executed PDF whose pages the letter page shows, or None.

    ``envelope`` and ``version`` are the letter page's records of the newest envelope and of
    the version shown. Once a letter is executed its current version reads as executed (the
    conformed letter with every signature, the signed pages, the certificate); an earlier
    version, or a letter not executed, shows its own PDF.
    """
    if not envelope or not version.get("current"):
        return None
    executed = envelope.get("executed")
    return executed.get("sha256") if executed else None
