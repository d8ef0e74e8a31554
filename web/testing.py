"""Running the app for a real browser: a live server in a thread, and Debian's chromium.

Used by the browser tests and by ``make screenshots``. Playwright's own browser download does
not work offline, so Playwright drives ``/usr/bin/chromium`` (Debian's ``chromium`` package).
"""

from __future__ import annotations

import re
import threading
from types import TracebackType
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from werkzeug.serving import make_server

__all__ = ["LiveServer", "CHROMIUM", "CHROMIUM_ARGS", "launch_chromium", "csrf_token",
           "terms_form_data"]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]

_CSRF_RE = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"'
                      r'|value="([^"]+)"[^>]*name="csrf_token"')


class ClosingClient(FlaskClient):
    """A test client that closes each request's body and spooled upload files.

    Werkzeug spools a multipart body over 500 KB into a temporary file, and the test client
    leaves it (and the request's spooled uploads) for the garbage collector to close. Answers
    are read into memory first, so closing them loses nothing.
    """

    def open(self, *args: Any, **kwargs: Any) -> Any:
        response = super().open(*args, **kwargs)
        stream = response.request.environ.get("wsgi.input") if response.request else None
        response.get_data()  # a streamed answer (a file) is read into memory before closing
        response.close()
        if stream is not None:
            stream.close()
        return response


def csrf_token(html: str) -> str:
    """Return the CSRF token a page's form carries."""
    match = _CSRF_RE.search(html)
    if not match:
        raise AssertionError("the page has no CSRF token")
    return match.group(1) or match.group(2)


def terms_form_data(terms: dict[str, Any], html: str, template: str = "separation_letter",
                    **extra: Any) -> dict[str, Any]:
    """Turn JSON terms into what the terms form posts, with the CSRF token of its page."""
    data: dict[str, Any] = {"csrf_token": csrf_token(html), "template": template}
    for key, value in terms.items():
        if isinstance(value, bool):
            data[key] = "true" if value else "false"
        elif isinstance(value, list):
            data[key] = [str(v) for v in value]
        else:
            data[key] = str(value)
    data.update(extra)
    return data


class LiveServer:
    """The app served over HTTP on 127.0.0.1 and a free port, in a background thread."""

    def __init__(self, app: Flask) -> None:
        self._server = make_server("127.0.0.1", 0, app, threaded=True)
        self.port = self._server.server_port
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="counterpart-live-server", daemon=True)

    def start(self) -> LiveServer:
        """Start serving."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def launch_chromium(playwright: Any, **options: Any) -> Any:
    """Launch Debian's chromium, headless, through Playwright."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                      headless=True, **options)
