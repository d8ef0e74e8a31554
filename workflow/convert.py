"""Turn Word documents into PDF with LibreOffice kept running between conversions.

A fresh ``soffice --convert-to pdf`` costs about two seconds a file; a LibreOffice that stays up
and is driven over UNO converts a letter in about 0.15 s. ``uno`` imports only in Debian's own
Python, so each LibreOffice is owned by a small worker script (:mod:`workflow.uno_worker`) run
with ``/usr/bin/python3``; this module talks to the workers as JSON lines over pipes.

:class:`PdfConverter` keeps a pool of such workers, one LibreOffice each with its own profile
folder (two LibreOffice processes sharing a profile silently lose documents), and hands each
conversion to a free one. A worker that hangs is killed after ``timeout`` seconds and started
again on next use; one found dead is restarted and the conversion retried once.

LibreOffice's resident memory grows a little with every document it converts, so a worker is
recycled (LibreOffice closed and started afresh on the same profile) after ``recycle_after``
conversions. It happens in the background the moment the worker comes back idle: the conversion
that reached the count has already returned, and a conversion asked for meanwhile is served by
another worker or, if there is none, waits for the restart. Only one worker restarts at a time.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections import deque
from pathlib import Path
from queue import Empty, Queue
from types import TracebackType
from typing import Any, NamedTuple

from workflow.errors import ConversionError

__all__ = [
    "PdfConverter",
    "RECYCLE_ENV",
    "WorkerPids",
    "check_libreoffice",
    "default_converter",
    "fresh_process_convert",
]

WORKER_SCRIPT = Path(__file__).with_name("uno_worker.py")
PROCESSES_ENV = "COUNTERPART_CONVERTER_PROCESSES"
RECYCLE_ENV = "COUNTERPART_CONVERTER_RECYCLE_AFTER"
# LibreOffice grows by up to about 40 KB a letter; a restart costs about 1.5 s of one core.
DEFAULT_RECYCLE_AFTER = 300
INSTALL_HINT = "apt-get install libreoffice-writer-nogui python3-uno fonts-liberation"

# Start-up includes creating a profile; it is slow on a loaded machine but must not hang.
_START_TIMEOUT = 60.0
# How long a worker gets to close LibreOffice after its stdin closes before it is killed.
_STOP_TIMEOUT = 10.0
# After LibreOffice is killed, the worker normally notices and exits at once.
_REAP_TIMEOUT = 3.0
_STDERR_LINES = 30
_EXIT_RESTART = 81
_WORD_FILTER = "MS Word 2007 XML"
# The PDF filter with its options as the command line takes them (JSON, LibreOffice 7.4 on),
# the same as uno_worker.py asks for over UNO: Word bookmarks become named destinations (the
# signing fields of a template are bookmarks; this is how their places reach the PDF), and the
# PDF is tagged, with its language and title, for screen readers.
_PDF_EXPORT = ('pdf:writer_pdf_Export:{'
               '"ExportBookmarksToPDFDestination":{"type":"boolean","value":"true"},'
               '"UseTaggedPDF":{"type":"boolean","value":"true"},'
               '"DisplayPDFDocumentTitle":{"type":"boolean","value":"true"}}')

log = logging.getLogger(__name__)


class WorkerPids(NamedTuple):
    """The process ids of one running worker and of its LibreOffice."""

    worker: int
    soffice: int


class _WorkerGone(Exception):
    """The worker died; ``before_request`` says whether it was gone before it got the request."""

    def __init__(self, detail: str, *, before_request: bool) -> None:
        super().__init__(detail)
        self.before_request = before_request


class _StartFailed(Exception):
    """A worker could not start LibreOffice."""


def _process_state(pid: int) -> tuple[str, int] | None:
    """Return the state letter and parent pid of a process, or None if it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may itself contain spaces or parentheses.
    fields = stat[stat.rindex(")") + 2 :].split()
    return fields[0], int(fields[1])


def _fsync_directory(folder: Path) -> None:
    """Flush a folder's entries so a rename survives a crash (best effort)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _commit(tmp: Path, dst: Path, name: str) -> None:
    """Flush ``tmp`` to disk and atomically rename it to ``dst`` (the PDF of ``name``)."""
    try:
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, dst)
    except OSError as exc:
        raise ConversionError(
            f"Cannot write the PDF of {name} to {dst}: {exc.strerror or exc}."
        ) from None
    _fsync_directory(dst.parent)


def _temp_sibling(path: Path) -> Path:
    """Return an unused hidden name next to ``path`` for writing it atomically."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")


class _Worker:
    """One ``uno_worker.py`` process and the LibreOffice it owns; used by one thread at a time."""

    def __init__(self, index: int, profile: Path, python: str, soffice: str) -> None:
        self.index = index
        self.profile = profile
        self.python = python
        self.soffice = soffice
        self.proc: subprocess.Popen[bytes] | None = None
        self.soffice_pid: int | None = None
        self._buffer = b""
        self._stderr_tail: deque[str] = deque(maxlen=_STDERR_LINES)
        self._stderr_thread: threading.Thread | None = None
        self._pipe_paths: list[Path] = []
        # Documents this LibreOffice has been asked to convert since it started.
        self.conversions = 0

    def running(self) -> bool:
        """Tell whether the worker process is alive and has announced itself ready."""
        return self.proc is not None and self.soffice_pid is not None and self.proc.poll() is None

    def pids(self) -> WorkerPids | None:
        """Return the worker's and LibreOffice's pids while the worker runs."""
        if not self.running():
            return None
        assert self.proc is not None and self.soffice_pid is not None
        return WorkerPids(self.proc.pid, self.soffice_pid)

    def stderr_tail(self) -> str:
        """Return the last lines the worker and LibreOffice wrote to stderr."""
        return " | ".join(line for line in list(self._stderr_tail) if line)

    def spawn(self) -> None:
        """Start the worker process; :meth:`await_ready` finishes the start-up."""
        self.discard()
        self.profile.mkdir(parents=True, exist_ok=True)
        self._stderr_tail.clear()
        self._buffer = b""
        args = [
            self.python,
            # Isolated mode: the venv's PYTHONPATH or PYTHONHOME must not leak into Debian's
            # Python, and the worker must not import anything from the project.
            "-I",
            str(WORKER_SCRIPT),
            "--profile",
            str(self.profile),
            "--soffice",
            self.soffice,
            "--start-timeout",
            str(_START_TIMEOUT),
        ]
        try:
            self.proc = subprocess.Popen(
                args,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                # The profile and the documents LibreOffice writes are its owner's only.
                umask=0o077,
            )
        except OSError as exc:
            raise _StartFailed(f"cannot run {self.python}: {exc.strerror or exc}") from exc
        self._stderr_thread = threading.Thread(
            target=self._drain_stderr,
            args=(self.proc,),
            name=f"pdf-worker-{self.index}-stderr",
            daemon=True,
        )
        self._stderr_thread.start()

    def _drain_stderr(self, proc: subprocess.Popen[bytes]) -> None:
        """Keep the last stderr lines and stop the pipe from filling up and blocking the worker."""
        assert proc.stderr is not None
        # This thread closes the pipe itself: closing it from another thread mid-read is unsafe.
        with proc.stderr:
            for raw in proc.stderr:
                self._stderr_tail.append(raw.decode("utf-8", "replace").rstrip())

    def await_ready(self, timeout: float) -> None:
        """Wait for the worker's ready line; kill it and raise :class:`_StartFailed` on failure."""
        try:
            line = self._read_line(time.monotonic() + timeout)
        except TimeoutError:
            self.kill()
            raise _StartFailed(f"LibreOffice did not start within {timeout:g} seconds") from None
        message = self._parse(line) if line is not None else None
        if message is None or not message.get("ready"):
            detail = (message or {}).get("error") or "the worker exited during start-up"
            self.reap(_REAP_TIMEOUT)
            raise _StartFailed(str(detail))
        self.soffice_pid = int(message["soffice_pid"])
        self._pipe_paths = [Path(path) for path in message.get("pipe_paths", [])]
        self.conversions = 0

    def _parse(self, line: bytes) -> dict[str, Any] | None:
        """Decode one protocol line, or None if it is not a JSON object."""
        try:
            message = json.loads(line)
        except ValueError:
            return None
        return message if isinstance(message, dict) else None

    def _read_line(self, deadline: float) -> bytes | None:
        """Return the worker's next stdout line, None at end of file; TimeoutError at deadline."""
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        # poll() rather than select(): a long-running server may hold file descriptors > 1024.
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            if not poller.poll(max(1, int(remaining * 1000))):
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line

    def _killed_by_signal(self) -> bool:
        assert self.proc is not None
        try:
            returncode = self.proc.wait(timeout=_REAP_TIMEOUT)
        except subprocess.TimeoutExpired:
            return False
        return returncode < 0

    def request(self, message: dict[str, str], timeout: float) -> dict[str, Any]:
        """Send one request and return the answer; raise _WorkerGone or TimeoutError."""
        if not self.running():
            raise _WorkerGone("the worker had exited", before_request=True)
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(message).encode() + b"\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise _WorkerGone("the worker had exited", before_request=True) from None
        self.conversions += 1
        line = self._read_line(time.monotonic() + timeout)
        answer = self._parse(line) if line is not None else None
        if answer is None:
            # A worker killed by a signal from outside (kill -9 just before this request, the
            # write landing in the pipe of a dying process) never read the document: safe to
            # retry. A document that crashes LibreOffice leaves the worker alive to say so.
            killed = self._killed_by_signal()
            raise _WorkerGone("the worker stopped while converting", before_request=killed)
        return answer

    def kill(self) -> None:
        """Kill LibreOffice and the worker now, without waiting for a clean shutdown."""
        proc = self.proc
        if proc is None:
            return
        pid = self.soffice_pid
        state = _process_state(pid) if pid is not None else None
        # Only while it is still the worker's child is the pid surely our LibreOffice and not a
        # recycled one. Its own pid only: signalling the group can deadlock its launcher.
        if pid is not None and state is not None and state[1] == proc.pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        # The worker notices LibreOffice's death and exits by itself, reaping it on the way.
        self._close_stdin()
        self.reap(_REAP_TIMEOUT)

    def begin_stop(self) -> None:
        """Ask the worker to close LibreOffice and exit (by closing its stdin)."""
        self._close_stdin()

    def _close_stdin(self) -> None:
        """Close the request pipe, which the worker reads as the order to shut down."""
        if self.proc is not None and self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass

    def reap(self, timeout: float) -> None:
        """Wait for the worker to exit, kill it after ``timeout``, and release its pipes."""
        proc = self.proc
        if proc is None:
            return
        self._close_stdin()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            # Its LibreOffice dies with it (parent-death signal set by the worker).
            proc.kill()
            proc.wait()
        if self._stderr_thread is not None:
            self._stderr_thread.join(timeout=_REAP_TIMEOUT)
            self._stderr_thread = None
        if proc.stdout is not None:
            proc.stdout.close()
        # A worker that was killed could not remove LibreOffice's socket file in /tmp.
        for path in self._pipe_paths:
            path.unlink(missing_ok=True)
        self._pipe_paths = []
        self.proc = None
        self.soffice_pid = None
        self._buffer = b""

    def discard(self) -> None:
        """Forget a worker that has exited or must go, killing what is left of it."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.kill()
        else:
            self.reap(_REAP_TIMEOUT)


class PdfConverter:
    """A pool of long-lived LibreOffice processes converting DOCX files to PDF."""

    def __init__(
        self,
        processes: int = 1,
        timeout: float = 60.0,
        *,
        python: str = "/usr/bin/python3",
        soffice: str = "soffice",
        work_dir: Path | None = None,
        recycle_after: int | None = None,
    ) -> None:
        """Prepare ``processes`` workers; nothing starts until :meth:`start` or first use.

        ``recycle_after`` is how many conversions a LibreOffice makes before it is restarted
        (0: never); None reads ``COUNTERPART_CONVERTER_RECYCLE_AFTER``, default 300. Raises
        ValueError for fewer than 1 process, a timeout that is not positive or a negative
        ``recycle_after``, and ConversionError for a bad value in the environment.
        """
        if processes < 1:
            raise ValueError("processes must be at least 1")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if recycle_after is None:
            recycle_after = _recycle_after_from_env()
        if recycle_after < 0:
            raise ValueError("recycle_after must be 0 (never) or a positive number of conversions")
        self.recycle_after = recycle_after
        self.restarts = 0
        self._recycling = 0
        self.processes = processes
        self.timeout = timeout
        self.python = python
        self.soffice = soffice
        self._work_dir = work_dir
        self._base: Path | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._workers: list[_Worker] = []
        self._idle: Queue[_Worker] = Queue()

    def __enter__(self) -> PdfConverter:
        """Return the converter; it starts on first use."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the converter."""
        self.close()

    def _ensure_pool(self) -> None:
        """Create the profile folders and idle workers on first use."""
        with self._lock:
            if self._closed:
                raise ConversionError("The PDF converter has been closed.")
            if self._workers:
                return
            if self._work_dir is not None:
                self._work_dir.mkdir(parents=True, exist_ok=True)
            self._base = Path(tempfile.mkdtemp(prefix="counterpart-lo-", dir=self._work_dir))
            for index in range(self.processes):
                worker = _Worker(index, self._base / f"profile-{index}", self.python, self.soffice)
                self._workers.append(worker)
                self._idle.put(worker)

    def _start_failed(self, worker: _Worker, reason: str, subject: str) -> ConversionError:
        """Build the error for a worker that did not start, with its stderr tail."""
        tail = worker.stderr_tail()
        hint = check_libreoffice(python=self.python, soffice=self.soffice)
        message = f"{subject}: LibreOffice did not start ({reason})."
        if tail:
            message += f" Its last output: {tail}"
        if hint:
            message += f" {hint}"
        return ConversionError(message)

    def _start_all(self, workers: list[_Worker], subject: str) -> None:
        """Start the given workers in parallel; retry each once with a fresh profile."""
        pending = [worker for worker in workers if not worker.running()]
        for worker in pending:
            try:
                worker.spawn()
            except _StartFailed as exc:
                raise self._start_failed(worker, str(exc), subject) from None
        deadline = time.monotonic() + _START_TIMEOUT
        for worker in pending:
            try:
                worker.await_ready(max(1.0, deadline - time.monotonic()))
            except _StartFailed:
                # A profile left damaged by a killed LibreOffice is the usual culprit.
                shutil.rmtree(worker.profile, ignore_errors=True)
                try:
                    worker.spawn()
                    worker.await_ready(_START_TIMEOUT)
                except _StartFailed as exc:
                    raise self._start_failed(worker, str(exc), subject) from None

    def start(self) -> None:
        """Start every worker now, in parallel, instead of on first use."""
        self._ensure_pool()
        taken: list[_Worker] = []
        try:
            while len(taken) < self.processes:
                try:
                    taken.append(self._idle.get_nowait())
                except Empty:
                    break  # the others are busy converting, so they are running already
            self._start_all(taken, "Cannot start the PDF converter")
        finally:
            for worker in taken:
                self._idle.put(worker)

    def worker_pids(self) -> list[WorkerPids]:
        """Return the pids of the running workers and their LibreOffice processes."""
        return [pids for worker in self._workers if (pids := worker.pids()) is not None]

    def convert(self, docx_path: Path, pdf_path: Path) -> None:
        """Convert ``docx_path`` to ``pdf_path``, written atomically; wait for a free worker."""
        src = Path(os.path.abspath(docx_path))
        dst = Path(os.path.abspath(pdf_path))
        name = src.name
        if not src.is_file():
            raise ConversionError(f"Cannot convert {name} to PDF: the file does not exist.")
        if not dst.parent.is_dir():
            raise ConversionError(
                f"Cannot convert {name} to PDF: the folder {dst.parent} does not exist."
            )
        self._ensure_pool()
        tmp = _temp_sibling(dst)
        worker = self._idle.get()
        try:
            if self._closed:
                raise ConversionError(f"Cannot convert {name} to PDF: the converter is closed.")
            self._convert_with(worker, src, tmp)
            if not tmp.is_file() or tmp.stat().st_size == 0:
                raise ConversionError(f"Converting {name} to PDF produced no file.")
            _commit(tmp, dst, name)
        finally:
            tmp.unlink(missing_ok=True)
            self._release(worker)

    def _release(self, worker: _Worker) -> None:
        """Hand a worker back; recycle it in the background if it is due and none else is."""
        if self.recycle_after > 0 and worker.conversions >= self.recycle_after \
                and worker.running():
            with self._lock:
                due = not self._closed and self._recycling == 0
                if due:
                    self._recycling += 1
            if due:
                try:
                    threading.Thread(target=self._recycle, args=(worker,), daemon=True,
                                     name=f"pdf-worker-{worker.index}-recycle").start()
                    return
                except RuntimeError:  # no thread to spare: recycle at a later release
                    with self._lock:
                        self._recycling -= 1
        self._idle.put(worker)

    def _recycle(self, worker: _Worker) -> None:
        """Close an idle worker's LibreOffice and start a new one, then hand the worker back."""
        started = time.monotonic()
        old = worker.pids()
        count = worker.conversions
        try:
            worker.begin_stop()
            worker.reap(_STOP_TIMEOUT)
            if self._closed:
                return
            try:
                self._start_all([worker], "Cannot restart the PDF converter")
            except ConversionError as exc:
                # The next conversion on this worker tries to start it again and reports it.
                log.warning("LibreOffice worker %d could not be restarted after %d conversions: "
                            "%s", worker.index, count, exc)
                return
            new = worker.pids()
            with self._lock:
                self.restarts += 1
            log.info("Restarted LibreOffice worker %d after %d conversions to release its "
                     "memory: pid %s became %s in %.1f s", worker.index, count,
                     old.soffice if old else "-", new.soffice if new else "-",
                     time.monotonic() - started)
        finally:
            with self._lock:
                self._recycling -= 1
            self._idle.put(worker)

    def _convert_with(self, worker: _Worker, src: Path, dst: Path) -> None:
        """Run one conversion on ``worker``, restarting it and retrying once if it was dead."""
        name = src.name
        request = {"src": str(src), "dst": str(dst)}
        for attempt in (1, 2):
            self._start_all([worker], f"Cannot convert {name} to PDF")
            try:
                answer = worker.request(request, self.timeout)
            except TimeoutError:
                worker.kill()
                raise ConversionError(
                    f"Converting {name} to PDF timed out after {self.timeout:g} seconds; "
                    "LibreOffice was stopped and will restart on next use."
                ) from None
            except _WorkerGone as gone:
                tail = worker.stderr_tail()
                worker.discard()
                if gone.before_request and attempt == 1:
                    continue
                message = f"Cannot convert {name} to PDF: {gone}."
                raise ConversionError(message + (f" Last output: {tail}" if tail else "")) from None
            except BaseException:
                # Interrupted mid-request (Ctrl-C, say): its late answer would be taken for the
                # answer to the next request, so this worker cannot be trusted any more.
                worker.kill()
                raise
            if answer.get("ok"):
                return
            error = answer.get("error") or "unknown error"
            if answer.get("fatal"):
                worker.discard()
                if answer.get("before") and attempt == 1:
                    continue
            raise ConversionError(f"Cannot convert {name} to PDF: {error}.")
        raise AssertionError("unreachable")  # pragma: no cover

    def convert_bytes(self, docx: bytes) -> bytes:
        """Convert a DOCX given as bytes and return the PDF bytes."""
        self._ensure_pool()
        with tempfile.TemporaryDirectory(prefix="counterpart-conv-", dir=self._work_dir) as tmp:
            src = Path(tmp) / "document.docx"
            dst = Path(tmp) / "document.pdf"
            src.write_bytes(docx)
            self.convert(src, dst)
            return dst.read_bytes()

    def close(self) -> None:
        """Stop every worker and its LibreOffice, and remove the profiles; safe to repeat."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            workers = list(self._workers)
        # Wait for conversions in flight (each bounded by the timeout) before stopping workers.
        deadline = time.monotonic() + self.timeout + _STOP_TIMEOUT
        taken: list[_Worker] = []
        for _ in workers:
            try:
                taken.append(self._idle.get(timeout=max(0.0, deadline - time.monotonic())))
            except Empty:
                break
        try:
            for worker in workers:
                worker.begin_stop()
            for worker in workers:
                worker.reap(_STOP_TIMEOUT)
        finally:
            # Threads still waiting for a worker wake up, see the converter closed and fail.
            for worker in taken:
                self._idle.put(worker)
            if self._base is not None:
                shutil.rmtree(self._base, ignore_errors=True)


def _office_program(soffice: str) -> str:
    """Return the real ``soffice.bin`` behind a ``soffice`` launcher, or ``soffice`` itself."""
    # The same as uno_worker.office_program: that script imports ``uno`` at load time, which
    # only Debian's own Python can, so this module cannot import it from there.
    found = shutil.which(soffice) or soffice
    # Killing the launcher on a timeout would leave the soffice.bin it forked running.
    real = Path(os.path.realpath(found))
    binary = real.with_name("soffice.bin")
    if real.name == "soffice" and os.access(binary, os.X_OK):
        return str(binary)
    return found


def fresh_process_convert(docx_path: Path, pdf_path: Path, timeout: float = 120) -> None:
    """Convert one file with a new ``soffice --convert-to pdf`` and its own throwaway profile."""
    src = Path(os.path.abspath(docx_path))
    dst = Path(os.path.abspath(pdf_path))
    name = src.name
    if not src.is_file():
        raise ConversionError(f"Cannot convert {name} to PDF: the file does not exist.")
    deadline = time.monotonic() + timeout
    with tempfile.TemporaryDirectory(prefix="counterpart-lo-") as tmp:
        outdir = Path(tmp) / "out"
        args = [
            _office_program("soffice"),
            "--headless",
            "--invisible",
            "--nologo",
            "--norestore",
            "--nolockcheck",
            f"-env:UserInstallation={(Path(tmp) / 'profile').as_uri()}",
            f"--infilter={_WORD_FILTER}",
            "--convert-to",
            _PDF_EXPORT,
            "--outdir",
            str(outdir),
            str(src),
        ]
        env = dict(os.environ, SAL_ENABLE_FILE_LOCKING="1")
        result: subprocess.CompletedProcess[bytes] | None = None
        # Without the launcher we handle LibreOffice's "restart me" exit after profile creation.
        for _ in range(3):
            try:
                result = subprocess.run(
                    args,
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    timeout=max(1.0, deadline - time.monotonic()),
                    env=env,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                raise ConversionError(
                    f"Converting {name} to PDF timed out after {timeout:g} seconds."
                ) from None
            except OSError as exc:
                raise ConversionError(
                    f"Cannot convert {name} to PDF: cannot run soffice ({exc.strerror or exc}). "
                    f"Install LibreOffice with: {INSTALL_HINT}"
                ) from None
            if result.returncode != _EXIT_RESTART:
                break
        produced = outdir / f"{src.stem}.pdf"
        if result is None or not produced.is_file() or produced.stat().st_size == 0:
            output = b"" if result is None else (result.stderr or result.stdout)
            detail = output.decode("utf-8", "replace").strip().splitlines()[-3:]
            raise ConversionError(
                f"Cannot convert {name} to PDF: LibreOffice produced no PDF"
                + (f" ({' | '.join(detail)})." if detail else ".")
            )
        tmp_dst = _temp_sibling(dst)
        try:
            try:
                shutil.copyfile(produced, tmp_dst)
            except OSError as exc:
                raise ConversionError(
                    f"Cannot write the PDF of {name} to {dst}: {exc.strerror or exc}."
                ) from None
            _commit(tmp_dst, dst, name)
        finally:
            tmp_dst.unlink(missing_ok=True)


def check_libreoffice(*, python: str = "/usr/bin/python3", soffice: str = "soffice") -> str | None:
    """Return None if LibreOffice and Python's ``uno`` are usable, else what is missing."""
    missing: list[str] = []
    if shutil.which(soffice) is None:
        missing.append(f"LibreOffice ({soffice}) is not installed")
    if not os.access(python, os.X_OK):
        missing.append(f"{python} does not exist")
    else:
        try:
            probe = subprocess.run(
                [python, "-I", "-c", "import uno"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=30,
                check=False,
            )
            if probe.returncode != 0:
                missing.append(f"{python} cannot import uno")
        except (OSError, subprocess.TimeoutExpired):
            missing.append(f"{python} cannot be run")
    if not missing:
        return None
    return (
        f"PDF conversion is unavailable because {' and '.join(missing)}; "
        f"install them with: {INSTALL_HINT}"
    )


_default: PdfConverter | None = None
_default_lock = threading.Lock()


def _recycle_after_from_env() -> int:
    """Read after how many conversions a LibreOffice restarts (default 300, 0 for never)."""
    raw = os.environ.get(RECYCLE_ENV, "").strip()
    if not raw:
        return DEFAULT_RECYCLE_AFTER
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise ConversionError(
            f"{RECYCLE_ENV} must be a whole number of conversions (0 for never), not {raw!r}.")
    return value


def _processes_from_env() -> int:
    """Read the number of LibreOffice processes from the environment (default 1)."""
    raw = os.environ.get(PROCESSES_ENV, "").strip()
    if not raw:
        return 1
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ConversionError(f"{PROCESSES_ENV} must be a whole number of at least 1, not {raw!r}.")
    return value


def default_converter() -> PdfConverter:
    """Return the process-wide converter, created on first call and closed at exit."""
    global _default
    with _default_lock:
        if _default is None:
            _default = PdfConverter(processes=_processes_from_env())
            atexit.register(_default.close)
        return _default
