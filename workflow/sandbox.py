"""Run untrusted-input checks in child processes with limits, from a pool of warm children.

A check (the seal of an uploaded PDF, the scan probe of a paper upload) parses bytes that anyone
may hand in, so it runs in a child Python process that sets its own limits: an address-space
limit (``RLIMIT_AS``), a CPU limit (``RLIMIT_CPU``), no core files, and a wall-time limit after
which the parent kills it. Started cold, such a child spends most of its life starting Python
and importing pyHanko or pypdf (about 450 ms) before the check itself (tens of ms).

So for each kind of check (its memory limit, import path and the modules it needs) a pool keeps
a *template* process: started once with ``python -I``, it sets the memory limit first (so the
imports count against it) and imports the modules, then forks children on request. Each child
waits for exactly ONE job, runs it, answers and exits: every check still has a process of its
own whose memory is a fresh copy of the template's, which never runs a job, so nothing a check
does reaches another. The pool keeps ``spare`` children forked ahead of time (2 unless
configured; see :func:`configure`) and forks a replacement in the background when one is taken.

Guarantees, warm or cold:

- the memory limit is set before the imports, in the template, and children inherit it;
- the CPU limit of a job is its CPU used so far plus the job's limit, set when the job arrives;
- the wall-time limit runs from when the job is handed over; past it the child is killed;
- the child runs under ``-I`` (no PYTHON* variables, user site folder or current folder);
- a child holds no open file beyond stdin, stdout and stderr (stdin/stdout are its socket to
  the parent, stderr is /dev/null);
- children die with their parent (``PR_SET_PDEATHSIG``): the template with the server process,
  job children with the template;
- a pool made in one process is never used by a process forked from it: the fork forgets it
  (closing its copies of the sockets) and makes its own on first use.

When no warm child can be had a job runs as before, in a freshly started child (a "cold"
start), rather than waiting forever: at once when ``spare`` is 0 or the template failed to
start, and after 20 s when it is still starting (a job waits for it first, because a cold child
would import the same modules beside it, on the same cores).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

__all__ = [
    "SandboxResult",
    "SandboxPool",
    "run",
    "configure",
    "spare_children",
    "pool_for",
    "close_pools",
    "DEFAULT_SPARE",
]

DEFAULT_SPARE = 2
"""Warm children kept ready per kind of check and server process, unless configured."""

SPARE_ENVIRONMENT = "COUNTERPART_SANDBOX_SPARE"
"""The environment variable that sets the number of warm children (0: start each check cold)."""

# How long a template may take to start and import its modules on a busy machine, and how long
# to wait before trying again after one failed (checks start cold meanwhile).
_TEMPLATE_START_SECONDS = 120.0
_RETRY_AFTER_FAILURE_SECONDS = 5.0
# How long a job waits for a template that is starting before it starts a cold child instead.
_WAIT_FOR_TEMPLATE_SECONDS = 20.0


class SandboxResult(NamedTuple):
    """What a limited child process gave back: its answer, or why there is none."""

    answer: dict | None
    failure: str | None
    """None, "timeout", "crash" (killed, out of memory, or no answer)."""


# The cold child: limits first, then the job's code (which does its own imports).
_LIMITS_PRELUDE = """\
import ctypes, os, resource, signal, sys
ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
if os.getppid() != {parent}:
    os._exit(1)
_memory, _cpu = int(sys.argv[1]), int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_AS, (_memory, _memory))
resource.setrlimit(resource.RLIMIT_CPU, (_cpu, _cpu + 1))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
"""

# The template process. Its stdin is a SOCK_SEQPACKET socket to the pool; argv holds the memory
# limit, the pid of the process it must die with, an import path ("" for none) and the modules
# to import. It says b"R" once ready, then answers b"F" (with one socket passed along: fork a
# child that takes its job from that socket; answer its pid) and b"K" + pid (kill that child if
# it is still ours; answer b"k"). At the end of the pool's socket it kills its children and exits.
_TEMPLATE = r"""
import ctypes, os, resource, signal, sys
def _die_with(parent):
    # PR_SET_PDEATHSIG = 1: the kernel sends SIGKILL when the process that started us ends.
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)
_die_with(int(sys.argv[2]))
_memory = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (_memory, _memory))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
import io, json, select, socket, struct
if sys.argv[3]:
    sys.path.insert(0, sys.argv[3])
for _name in sys.argv[4:]:
    __import__(_name)
del _name
import gc
gc.collect()
gc.freeze()  # the collector then leaves the imported objects alone: children share their pages

def _read_exactly(count):
    chunks = []
    while count:
        chunk = os.read(0, min(count, 1 << 20))
        if not chunk:
            os._exit(0)  # the pool let this child go without a job
        chunks.append(chunk)
        count -= len(chunk)
    return b"".join(chunks)

def _write_all(data):
    view = memoryview(data)
    while view:
        view = view[os.write(1, view):]

def _run_one_job(template):
    _die_with(template)
    (header_size,) = struct.unpack(">I", _read_exactly(4))
    job = json.loads(_read_exactly(header_size))
    data = _read_exactly(job["size"])
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = int(usage.ru_utime + usage.ru_stime) + 1 + int(job["cpu"])
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    sys.argv = ["-c", str(_memory), str(job["cpu"]), *job["args"]]
    sys.stdin = io.TextIOWrapper(io.BytesIO(data))
    output = io.BytesIO()
    sys.stdout = io.TextIOWrapper(output, encoding="utf-8", write_through=True)
    status = 0
    try:
        exec(compile(job["code"], "<sandbox job>", "exec"),
             {"__name__": "__main__", "sys": sys, "resource": resource,
              "_memory": _memory, "_cpu": int(job["cpu"])})
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        status = 1
    sys.stdout.flush()
    _write_all(struct.pack(">i", status) + output.getvalue())

def _serve():
    control = socket.socket(fileno=0)
    template = os.getpid()
    children = set()
    control.sendall(b"R")
    while True:
        while children:
            try:
                pid, _status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                children.clear()
                break
            if pid == 0:
                break
            children.discard(pid)
        if not select.select([control], [], [], 1.0)[0]:
            continue
        message, fds, _flags, _address = socket.recv_fds(control, 16, 1)
        if not message:
            break
        if message[:1] == b"F" and len(fds) == 1:
            pid = os.fork()
            if pid == 0:
                try:
                    control.detach()
                    os.dup2(fds[0], 0)
                    os.dup2(fds[0], 1)
                    os.closerange(3, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
                    _run_one_job(template)
                finally:
                    os._exit(0)
            os.close(fds[0])
            children.add(pid)
            control.sendall(struct.pack(">q", pid))
        elif message[:1] == b"K" and len(message) == 9:
            (pid,) = struct.unpack(">q", message[1:])
            if pid in children:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            control.sendall(b"k")
        else:
            for fd in fds:
                os.close(fd)
            control.sendall(b"?")
    for pid in children:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    os._exit(0)

_serve()
"""


class _Child(NamedTuple):
    """A forked child waiting for its job on ``channel``."""

    pid: int
    channel: socket.socket


class SandboxPool:
    """Warm children for one kind of check: one memory limit, import path and set of modules.

    ``take()`` hands out a child that has never run a job, or None when none can be had now;
    a background thread keeps ``spare`` children forked ahead of time.
    """

    def __init__(self, memory_limit: int, pythonpath: Path | None, preload: Sequence[str],
                 spare: int) -> None:
        self.memory_limit = memory_limit
        self.pythonpath = pythonpath
        self.preload = tuple(preload)
        self.spare = spare
        self.pid = os.getpid()
        self._lock = threading.Lock()
        self._wanted = threading.Condition(self._lock)  # the background thread has work
        self._changed = threading.Condition(self._lock)  # a template or child became ready
        self._starting = False
        self._control_lock = threading.Lock()
        self._ready: deque[_Child] = deque()
        self._template: subprocess.Popen[bytes] | None = None
        self._control: socket.socket | None = None
        self._retry_at = 0.0
        self._closed = False
        self._thread: threading.Thread | None = None
        self.started_templates = 0
        """How many template processes this pool has started (a test's view of restarts)."""
        self.failed_starts = 0
        """How many of them ended before they were ready (their imports failed)."""

    # -- used by jobs

    def take(self, wait: float = 0.0) -> _Child | None:
        """Return a warm child that has never run a job, or None if none can be had now.

        While the template is starting, wait up to ``wait`` seconds for it (a cold child would
        import the same modules beside it, on the same cores); after a failed start, never.
        """
        if self.pid != os.getpid():
            raise RuntimeError("a sandbox pool cannot be used in a process forked from its own")
        deadline = time.monotonic() + wait
        with self._lock:
            if self._closed:
                return None
            self._ensure_thread()
            self._wanted.notify()
            while (not self._ready and self._control is None and self._starting
                   and not self._closed and time.monotonic() < deadline):
                self._changed.wait(deadline - time.monotonic())
            child = self._ready.popleft() if self._ready else None
            self._wanted.notify()
            if child is not None or self._control is None:
                return child
        # The template is up but nothing was forked ahead: a fork now takes milliseconds.
        return self._fork_child()

    def start(self) -> None:
        """Start the template and the spare children in the background, if not yet done."""
        if self.pid != os.getpid():
            raise RuntimeError("a sandbox pool cannot be used in a process forked from its own")
        with self._lock:
            if not self._closed:
                self._ensure_thread()
                self._wanted.notify()

    def kill(self, pid: int) -> None:
        """Kill the template's child ``pid`` if it is still running (past its wall time)."""
        self._request(b"K" + struct.pack(">q", pid), None)

    def ready_count(self) -> int:
        """How many children are waiting for a job now."""
        with self._lock:
            return len(self._ready)

    def template_pid(self) -> int | None:
        """The pid of the template process, if one is running."""
        with self._lock:
            return self._template.pid if self._template is not None else None

    def close(self) -> None:
        """Let the waiting children go and end the template (its children end with it)."""
        with self._lock:
            self._closed = True
            self._wanted.notify_all()
            self._changed.notify_all()
            ready, self._ready = list(self._ready), deque()
            template, self._template = self._template, None
            control, self._control = self._control, None
        for child in ready:
            child.channel.close()
        if control is not None:
            with self._control_lock:
                control.close()
        if template is not None:
            try:
                template.wait(timeout=5)
            except subprocess.TimeoutExpired:
                template.kill()
                template.wait()

    def forget(self) -> None:
        """In a process forked from the pool's own: close this copy of its sockets, touch
        nothing else (the template and its children belong to the other process)."""
        self._closed = True
        for child in self._ready:
            with contextlib.suppress(OSError):
                child.channel.close()
        if self._control is not None:
            with contextlib.suppress(OSError):
                self._control.close()
        self._ready.clear()

    # -- the background thread

    def _ensure_thread(self) -> None:
        # The template is started by this long-lived thread because PR_SET_PDEATHSIG fires when
        # the *thread* that started a child ends, not only the process.
        if self._thread is None:
            self._starting = True
            self._thread = threading.Thread(target=self._keep_ready, daemon=True,
                                            name="counterpart-sandbox")
            self._thread.start()

    def _keep_ready(self) -> None:
        while True:
            with self._lock:
                while not self._closed and not self._needs_work():
                    self._wanted.wait(timeout=max(0.05, self._retry_at - time.monotonic())
                                      if self._control is None else None)
                if self._closed:
                    return
                needs_template = self._control is None
                self._starting = needs_template
            if needs_template:
                self._start_template()
                continue
            child = self._fork_child()
            if child is None:
                with self._lock:  # the template refused or ended: do not ask again at once
                    self._wanted.wait(timeout=0.5)
                continue
            with self._lock:
                if self._closed:
                    child.channel.close()
                    return
                self._ready.append(child)
                self._changed.notify()

    def _needs_work(self) -> bool:
        if self._control is None:
            return time.monotonic() >= self._retry_at
        return len(self._ready) < self.spare

    def _start_template(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        command = [sys.executable, "-I", "-c", _TEMPLATE, str(self.memory_limit),
                   str(os.getpid()), str(self.pythonpath or ""), *self.preload]
        try:
            template = subprocess.Popen(command, stdin=theirs.fileno(),
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        close_fds=True)
        except OSError:
            ours.close()
            self._failed()
            return
        finally:
            theirs.close()
        self.started_templates += 1
        ours.settimeout(_TEMPLATE_START_SECONDS)
        try:
            ready = ours.recv(1) == b"R"
        except OSError:
            ready = False
        if not ready:
            ours.close()
            template.kill()
            template.wait()
            self._failed()
            return
        ours.settimeout(None)
        with self._lock:
            self._starting = False
            self._changed.notify_all()
            if self._closed:
                ours.close()
                template.wait()
                return
            self._template, self._control = template, ours

    def _failed(self) -> None:
        with self._lock:
            self.failed_starts += 1
            self._starting = False
            self._changed.notify_all()
            self._retry_at = time.monotonic() + _RETRY_AFTER_FAILURE_SECONDS

    def _fork_child(self) -> _Child | None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            answer = self._request(b"F", theirs)
        finally:
            theirs.close()
        if answer is None or len(answer) != 8:
            ours.close()
            return None
        return _Child(struct.unpack(">q", answer)[0], ours)

    def _request(self, message: bytes, passed: socket.socket | None) -> bytes | None:
        """Send one message to the template and return its answer, or None if it is gone."""
        with self._control_lock:
            control = self._control
            if control is None:
                return None
            try:
                if passed is None:
                    control.sendall(message)
                else:
                    socket.send_fds(control, [message], [passed.fileno()])
                answer = control.recv(16)
            except OSError:
                answer = b""
            if answer:
                return answer
        self._template_gone(control)
        return None

    def _template_gone(self, control: socket.socket) -> None:
        with self._lock:
            if self._control is not control:
                return
            template, self._template, self._control = self._template, None, None
            ready, self._ready = list(self._ready), deque()
            self._retry_at = time.monotonic() + _RETRY_AFTER_FAILURE_SECONDS
        control.close()
        for child in ready:
            child.channel.close()
        if template is not None:
            template.kill()
            template.wait()


_pools: dict[tuple[int, str, tuple[str, ...]], SandboxPool] = {}
_pools_lock = threading.Lock()
_spare: int | None = None
# Pools inherited through a fork: kept so that their objects are never finalised here.
_inherited: list[SandboxPool] = []


def configure(spare: int | None) -> None:
    """Set how many warm children each kind of check keeps ready in this process (0: start
    every check cold; None: back to the environment's ``COUNTERPART_SANDBOX_SPARE`` or 2).

    Pools made before keep their size until :func:`close_pools`.
    """
    global _spare
    if spare is not None and spare < 0:
        raise ValueError("spare must be 0 or more")
    _spare = spare


def spare_children() -> int:
    """Return the number of warm children a pool keeps ready (see :func:`configure`)."""
    if _spare is not None:
        return _spare
    value = os.environ.get(SPARE_ENVIRONMENT, "").strip()
    if not value:
        return DEFAULT_SPARE
    try:
        return max(0, int(value))
    except ValueError:
        raise ValueError(f"{SPARE_ENVIRONMENT} must be a whole number, not {value!r}") from None


def pool_for(memory_limit: int, pythonpath: Path | None,
             preload: Sequence[str]) -> SandboxPool:
    """Return this process's pool for one kind of check, made on first use."""
    key = (memory_limit, str(pythonpath or ""), tuple(preload))
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None or pool.pid != os.getpid():
            pool = _pools[key] = SandboxPool(memory_limit, pythonpath, preload,
                                             spare_children())
        return pool


def close_pools() -> None:
    """End every pool of this process and its processes (at exit, and in tests)."""
    with _pools_lock:
        pools = [pool for pool in _pools.values() if pool.pid == os.getpid()]
        _pools.clear()
    for pool in pools:
        pool.close()


def _forget_pools_after_fork() -> None:
    global _pools_lock
    _pools_lock = threading.Lock()  # another thread may have held it at the fork
    for pool in _pools.values():
        pool.forget()
        _inherited.append(pool)
    _pools.clear()


os.register_at_fork(after_in_child=_forget_pools_after_fork)
atexit.register(close_pools)


def run(code: str, args: Sequence[str], data: bytes, *, time_limit: float, memory_limit: int,
        pythonpath: Path | None = None, preload: Sequence[str] = ()) -> SandboxResult:
    """Run Python ``code`` in a child process with limits, feed it ``data``, read its JSON.

    The child has ``memory_limit`` bytes of address space (set before any import) and about
    ``time_limit`` seconds of CPU, and is killed ``time_limit`` seconds of wall time after it
    is handed the job. ``code`` reads ``data`` from ``sys.stdin.buffer``, finds ``args`` in
    ``sys.argv[3:]`` and writes one JSON object to stdout; ``sys`` and ``resource`` are
    imported for it. ``pythonpath`` is put first on the child's import path. With ``preload``
    (module names) the job runs in a warm child of the pool for these settings, one that has
    imported them already; without, or when no warm child can be had, in a child started for
    it. A child that is killed, crashes, exits with a status other than 0 or answers no JSON
    object is a "crash"; a child past the wall-time limit is a "timeout".
    """
    if preload and spare_children() > 0:
        pool = pool_for(memory_limit, pythonpath, preload)
        child = pool.take(wait=_WAIT_FOR_TEMPLATE_SECONDS)
        if child is not None:
            return _run_warm(pool, child, code, args, data, time_limit)
    return _run_cold(code, args, data, time_limit=time_limit, memory_limit=memory_limit,
                     pythonpath=pythonpath)


def _run_warm(pool: SandboxPool, child: _Child, code: str, args: Sequence[str], data: bytes,
              time_limit: float) -> SandboxResult:
    header = json.dumps({"code": code, "args": [str(arg) for arg in args],
                         "cpu": max(1, round(time_limit)), "size": len(data)}).encode()
    deadline = time.monotonic() + time_limit
    channel = child.channel
    chunks = []
    try:
        channel.settimeout(time_limit)
        try:
            channel.sendall(struct.pack(">I", len(header)) + header + data)
            channel.shutdown(socket.SHUT_WR)
        except TimeoutError:
            raise
        except OSError:
            pass  # the child ended before taking all of its job: its answer says how
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            channel.settimeout(remaining)
            chunk = channel.recv(1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
    except TimeoutError:
        pool.kill(child.pid)
        return SandboxResult(None, "timeout")
    except OSError:  # the connection was reset: the child ended without reading its job
        pool.kill(child.pid)
        return SandboxResult(None, "crash")
    finally:
        channel.close()
    output = b"".join(chunks)
    if len(output) < 4 or struct.unpack(">i", output[:4])[0] != 0:
        return SandboxResult(None, "crash")
    return _answer(output[4:])


def _run_cold(code: str, args: Sequence[str], data: bytes, *, time_limit: float,
              memory_limit: int, pythonpath: Path | None) -> SandboxResult:
    if pythonpath is not None:
        code = f"sys.path.insert(0, {str(pythonpath)!r})\n" + code
    # -I: ignore PYTHON* variables, the user's site folder and the current folder.
    prelude = _LIMITS_PRELUDE.replace("{parent}", str(os.getpid()))
    command = [sys.executable, "-I", "-c", prelude + code, str(memory_limit),
               str(max(1, round(time_limit))), *args]
    try:
        completed = subprocess.run(command, input=data, capture_output=True,
                                   timeout=time_limit, check=False)
    except subprocess.TimeoutExpired:
        return SandboxResult(None, "timeout")
    if completed.returncode != 0:
        return SandboxResult(None, "crash")
    return _answer(completed.stdout)


def _answer(output: bytes) -> SandboxResult:
    try:
        answer = json.loads(output)
    except ValueError:
        return SandboxResult(None, "crash")
    if not isinstance(answer, dict):
        return SandboxResult(None, "crash")
    return SandboxResult(answer, None)
