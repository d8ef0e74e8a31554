"""Pictures of a PDF's pages for the letter page, rendered with pdfium and kept in memory.

A page picture depends only on the PDF's bytes, so pictures and page counts are cached under
the document's SHA-256; the cache is bounded by the bytes it holds. A picture shows a page of
a letter as plainly as the PDF does, so browsers and proxies must not keep it
(:func:`send_page_picture`: ``Cache-Control: no-store``); the server's cache makes it cheap
to send again.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from collections.abc import Callable

import pypdfium2 as pdfium
from flask import Flask, current_app, make_response, request
from werkzeug.wrappers import Response

from workflow.errors import DocumentError

__all__ = ["PagePreviews", "init_app", "get_previews", "send_page_picture"]

EXTENSION = "counterpart.previews"
# pdfium is not thread-safe: one rendering at a time in the whole process.
_PDFIUM_LOCK = threading.Lock()


class PagePreviews:
    """Page counts and PNG pictures of PDFs, cached by SHA-256."""

    def __init__(self, dpi: int = 100, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.dpi = dpi
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._pngs: OrderedDict[tuple[str, int, bool], bytes] = OrderedDict()
        self._held = 0
        self._sizes: dict[str, list[tuple[int, int]]] = {}

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
