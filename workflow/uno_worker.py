#!/usr/bin/python3
"""Serve DOCX to PDF conversions from one long-lived LibreOffice, as JSON lines on stdin/stdout.

Run by :mod:`workflow.convert` with Debian's own ``/usr/bin/python3``, the only Python that can
import ``uno``; so this script uses the standard library and ``uno`` only and imports nothing
from the project.

Protocol, one JSON object a line:

* once LibreOffice answers over UNO the worker prints
  ``{"ready": true, "pid": <worker pid>, "soffice_pid": <LibreOffice pid>, "pipe_paths": [...]}``
  (where LibreOffice's socket may be, for clean-up if the worker is killed), or
  ``{"ready": false, "error": "..."}`` and exits 1 if it cannot start LibreOffice;
* each request ``{"src": "/abs/in.docx", "dst": "/abs/out.pdf"}`` is answered with
  ``{"ok": true}`` or ``{"ok": false, "error": "..."}``. An answer with ``"fatal": true`` means
  LibreOffice is gone and the worker exits right after it; ``"before": true`` adds that it was
  already gone before the request touched it, so the request can safely be retried elsewhere.

On end of input the worker closes LibreOffice (terminate, then kill if it lingers) and exits.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, TextIO

import uno  # type: ignore[import-not-found]
from com.sun.star.beans import PropertyValue  # type: ignore[import-not-found]
from com.sun.star.connection import NoConnectException  # type: ignore[import-not-found]
from com.sun.star.lang import DisposedException  # type: ignore[import-not-found]

# LibreOffice's own code for "restart me": a fresh profile makes the first start exit with it.
_EXIT_RESTART = 81
_POLL_INTERVAL = 0.05
_TERMINATE_WAIT = 5.0
_PR_SET_PDEATHSIG = 1
_WORD_FILTER = "MS Word 2007 XML"
_PDF_FILTER = "writer_pdf_Export"
# Word bookmarks become named destinations of the PDF: the signing fields of a template are
# bookmarks, and this is how their exact place on the page reaches the PDF. The PDF is tagged
# (its headings, paragraphs and tables marked up, with the document's language in /Lang) so
# that screen readers and reflowing viewers read it in order; the viewer's title bar shows the
# document's title rather than its file name.
_PDF_FILTER_OPTIONS = {"ExportBookmarksToPDFDestination": True, "UseTaggedPDF": True,
                       "DisplayPDFDocumentTitle": True}


class StartError(Exception):
    """LibreOffice could not be started or reached over UNO."""


def office_program(soffice: str) -> str:
    """Return the real ``soffice.bin`` behind a ``soffice`` launcher, or ``soffice`` itself."""
    found = shutil.which(soffice) or soffice
    # The launcher is a shell script that runs oosplash, which forks soffice.bin: the pid we
    # would hold is then not LibreOffice's, so a kill or a parent-death signal misses it.
    real = Path(os.path.realpath(found))
    binary = real.with_name("soffice.bin")
    if real.name == "soffice" and os.access(binary, os.X_OK):
        return str(binary)
    return found


def _load_prctl() -> Any:
    """Return libc's prctl, resolved now because the pre-exec hook must not load libraries."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()


def _die_with_parent() -> None:
    """Ask the kernel to kill this child when the worker dies (runs in the child, pre-exec)."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _prop(name: str, value: Any) -> Any:
    """Return a UNO PropertyValue."""
    prop = PropertyValue()
    prop.Name = name
    prop.Value = value
    return prop


_PDF_FILTER_DATA = tuple(_prop(name, value) for name, value in _PDF_FILTER_OPTIONS.items())


def _uno_message(exc: BaseException) -> str:
    """Return the readable text of a UNO or Python exception."""
    message = getattr(exc, "Message", "") or str(exc)
    return f"{type(exc).__name__}: {message.strip()}" if message.strip() else type(exc).__name__


class Office:
    """One LibreOffice process, its UNO connection and its Desktop."""

    def __init__(self, soffice: str, profile: Path, start_timeout: float) -> None:
        self.program = office_program(soffice)
        self.profile = profile
        self.profile_url = profile.absolute().as_uri()
        self.start_timeout = start_timeout
        self.pipe_name = f"counterpart-{os.getpid()}-{uuid.uuid4().hex}"
        self.process: subprocess.Popen[bytes] | None = None
        self.desktop: Any = None

    def _launch(self) -> subprocess.Popen[bytes]:
        """Start soffice listening on our private pipe."""
        args = [
            self.program,
            "--headless",
            "--invisible",
            "--nologo",
            "--norestore",
            "--nodefault",
            "--nolockcheck",
            f"-env:UserInstallation={self.profile_url}",
            f"--accept=pipe,name={self.pipe_name};urp;StarOffice.ComponentContext",
        ]
        env = dict(os.environ, SAL_ENABLE_FILE_LOCKING="1")
        try:
            return subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                # fd 1 of this process is already stderr (see main), so LibreOffice's chatter
                # never reaches the protocol stream.
                stdout=sys.stderr.fileno(),
                stderr=sys.stderr.fileno(),
                env=env,
                preexec_fn=_die_with_parent,
            )
        except OSError as exc:
            raise StartError(f"cannot run {self.program}: {exc.strerror or exc}") from exc

    def start(self) -> None:
        """Start LibreOffice and connect to it, polling until it answers."""
        self.profile.mkdir(parents=True, exist_ok=True)
        local = uno.getComponentContext()
        resolver = local.ServiceManager.createInstanceWithContext(
            "com.sun.star.bridge.UnoUrlResolver", local
        )
        url = f"uno:pipe,name={self.pipe_name};urp;StarOffice.ComponentContext"
        deadline = time.monotonic() + self.start_timeout
        restarts = 0
        self.process = self._launch()
        while True:
            code = self.process.poll()
            if code == _EXIT_RESTART and restarts < 2:
                restarts += 1
                self.process = self._launch()
                continue
            if code is not None:
                raise StartError(f"LibreOffice exited with status {code} while starting")
            try:
                context = resolver.resolve(url)
                self.desktop = context.ServiceManager.createInstanceWithContext(
                    "com.sun.star.frame.Desktop", context
                )
                if self.desktop is not None:
                    return
            except NoConnectException:
                pass
            except DisposedException:
                # LibreOffice can drop the first connection while it is still initialising.
                pass
            if time.monotonic() > deadline:
                raise StartError(
                    f"LibreOffice did not answer within {self.start_timeout:g} seconds"
                )
            time.sleep(_POLL_INTERVAL)

    def pipe_paths(self) -> list[Path]:
        """Return where LibreOffice may put its listening socket (left behind if it is killed)."""
        # LibreOffice's osl layer names a pipe OSL_PIPE_<uid>_<name> in /tmp, else in /var/tmp.
        # Besides ours it opens one per profile, named after the MD5 of the profile's URL in
        # UTF-16LE written as unpadded hex bytes (desktop/source/app/officeipcthread.cxx).
        digest = hashlib.md5(self.profile_url.encode("utf-16-le"), usedforsecurity=False)
        ipc_name = "SingleOfficeIPC_" + "".join(format(byte, "x") for byte in digest.digest())
        leaves = [f"OSL_PIPE_{os.getuid()}_{name}" for name in (self.pipe_name, ipc_name)]
        return [Path(folder) / leaf for folder in ("/tmp", "/var/tmp") for leaf in leaves]

    def exit_status(self) -> int | None:
        """Return LibreOffice's exit status, or None while it runs."""
        return None if self.process is None else self.process.poll()

    def convert(self, src: str, dst: str) -> dict[str, Any]:
        """Convert one Word document to PDF and return the protocol answer."""
        gone = self._gone_before()
        if gone is not None:
            return {"ok": False, "fatal": True, "before": True, "error": gone}
        load_props = (
            _prop("Hidden", True),
            _prop("ReadOnly", True),
            # Naming the filter stops LibreOffice from opening any other bytes as plain text.
            _prop("FilterName", _WORD_FILTER),
            _prop("MacroExecutionMode", 0),
            _prop("UpdateDocMode", 0),
        )
        document = None
        try:
            document = self.desktop.loadComponentFromURL(
                uno.systemPathToFileUrl(src), "_blank", 0, load_props
            )
            if document is None:
                return {"ok": False, "error": "it is not a readable Word document"}
            document.storeToURL(uno.systemPathToFileUrl(dst), (
                _prop("FilterName", _PDF_FILTER),
                _prop("FilterData", uno.Any("[]com.sun.star.beans.PropertyValue",
                                            _PDF_FILTER_DATA)),
            ))
            return {"ok": True}
        except Exception as exc:
            if isinstance(exc, DisposedException) or self._dies_soon():
                error = f"LibreOffice stopped ({_uno_message(exc)})"
                return {"ok": False, "fatal": True, "error": error}
            return {"ok": False, "error": _uno_message(exc)}
        finally:
            if document is not None:
                self._close_document(document)

    def _gone_before(self) -> str | None:
        """Return why LibreOffice is unusable before the document is touched, or None."""
        status = self.exit_status()
        if status is not None:
            return f"LibreOffice had exited with status {status}"
        try:
            # One cheap round trip: a LibreOffice killed a moment ago may not be reapable yet,
            # but its bridge already fails, and then no document can be blamed for its death.
            self.desktop.getImplementationName()
        except Exception as exc:
            return f"LibreOffice was no longer answering ({_uno_message(exc)})"
        return None

    def _dies_soon(self) -> bool:
        """Tell whether LibreOffice exits within a moment (a failed call may precede its death)."""
        if self.process is None:
            return True
        try:
            self.process.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            return False
        return True

    @staticmethod
    def _close_document(document: Any) -> None:
        """Close a loaded document, disposing it if closing is vetoed."""
        try:
            document.close(True)
        except Exception:
            try:
                document.dispose()
            except Exception:
                pass

    def stop(self) -> None:
        """Terminate LibreOffice, killing it if it does not exit in time."""
        process = self.process
        if process is None:
            return
        if process.poll() is None and self.desktop is not None:
            try:
                self.desktop.terminate()
            except Exception:
                # The connection drops as LibreOffice exits; that is the expected outcome.
                pass
        try:
            process.wait(timeout=_TERMINATE_WAIT)
        except subprocess.TimeoutExpired:
            # Only LibreOffice's own pid: signalling its group can deadlock its launcher.
            process.kill()
            process.wait()
        for path in self.pipe_paths():
            path.unlink(missing_ok=True)


def _send(stream: TextIO, message: dict[str, Any]) -> None:
    """Write one protocol line, ignoring a parent that has gone away."""
    try:
        stream.write(json.dumps(message) + "\n")
        stream.flush()
    except (BrokenPipeError, OSError):
        pass


def _serve(office: Office, out: TextIO) -> None:
    """Answer requests from stdin until end of input or until LibreOffice is gone."""
    for raw in sys.stdin.buffer:
        line = raw.strip()
        if not line:
            continue
        try:
            request = json.loads(line)
            src, dst = str(request["src"]), str(request["dst"])
        except (ValueError, KeyError, TypeError) as exc:
            _send(out, {"ok": False, "error": f"bad request: {exc}"})
            continue
        answer = office.convert(src, dst)
        _send(out, answer)
        if answer.get("fatal"):
            return


def _on_sigterm(signum: int, frame: object) -> None:
    """Turn SIGTERM into a normal exit so LibreOffice is closed on the way out."""
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    """Start LibreOffice, announce readiness and serve conversions until stdin closes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", required=True, type=Path, help="LibreOffice profile folder")
    parser.add_argument("--soffice", default="soffice", help="soffice program to run")
    parser.add_argument("--start-timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    parent = os.getppid()

    # Keep the protocol on a private copy of stdout and point fd 1 at stderr, so nothing
    # printed by UNO or LibreOffice can corrupt the JSON stream.
    out = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    # The parent decides when we stop (closing stdin); a terminal Ctrl-C reaches it too.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_sigterm)

    office = Office(args.soffice, args.profile, args.start_timeout)
    try:
        try:
            office.start()
        except StartError as exc:
            _send(out, {"ready": False, "error": str(exc)})
            return 1
        assert office.process is not None
        ready = {
            "ready": True,
            "pid": os.getpid(),
            "soffice_pid": office.process.pid,
            "pipe_paths": [str(path) for path in office.pipe_paths()],
        }
        _send(out, ready)
        _serve(office, out)
        return 0
    finally:
        office.stop()
        if os.getppid() != parent:
            _remove_orphaned_profile(args.profile)


def _remove_orphaned_profile(profile: Path) -> None:
    """Delete the profile of a parent that died without cleaning up, and its folder if empty."""
    shutil.rmtree(profile, ignore_errors=True)
    try:
        profile.parent.rmdir()
    except OSError:
        pass  # other workers' profiles are still there; the last one out removes it


if __name__ == "__main__":
    sys.exit(main())
