"""The ``counterpart`` command: the letter commands of :mod:`workflow.cli`, plus the web app's.

``serve`` runs the app in one waitress process per core (with a background worker as its
child), ``worker``
runs background jobs; ``migrate``, ``create-user``, ``create-first-admin``,
``set-password``, ``disable-user``, ``enable-user``, ``create-token``, ``list-tokens`` and
``revoke-token`` look after the data folder and its accounts; ``template add`` and
``template list`` look after its template library. Each reads
the same environment variables as the app (``COUNTERPART_DATA_DIR``,
``COUNTERPART_DATABASE_URL``, ...), and the first to touch a new data folder creates and
migrates it.
"""

from __future__ import annotations

import ctypes
import datetime as dt
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import click

from workflow.accounts import (
    DEFAULT_TOKEN_DAYS,
    MAX_TOKEN_DAYS,
    ROLES,
    count_users,
    create_api_token,
    create_user,
    disable_user,
    enable_user,
    generate_password,
    list_api_tokens,
    revoke_api_tokens,
    set_password,
)
from workflow.cli import cli as workflow_cli
from workflow.db import Database, open_database
from workflow.errors import CounterpartError

from .config import ConfigError, config_from_env, secret_key_for
from .server import CONNECTION_LIMIT, DEFAULT_CONNECTIONS_PER_ADDRESS

__all__ = ["cli", "main", "WorkerSupervisor"]

log = logging.getLogger(__name__)

EXIT_ERROR = 2
FIRST_ADMIN_ENV = "COUNTERPART_ADMIN_EMAIL"
DEFAULT_ADMIN_EMAIL = "admin@example.com"


def _fail(message: str) -> None:
    click.echo(message, err=True)
    sys.exit(EXIT_ERROR)


@contextmanager
def _database() -> Iterator[Database]:
    try:
        config = config_from_env()
    except ConfigError as exc:
        _fail(str(exc))
    database = open_database(config["DATA_DIR"], config["DATABASE_URL"])
    try:
        yield database
    finally:
        database.dispose()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Draft letter agreements from their terms and execute them in counterparts."""


for _name, _command in workflow_cli.commands.items():
    cli.add_command(_command, _name)


@cli.command()
def migrate() -> None:
    """Create the data folder's database, or bring it up to the newest schema, and load the
    template folder's templates into its template library."""
    with _database() as database:
        added = _load_builtin_templates(database)
        click.echo(f"The database is up to date: {database.engine.url.render_as_string()}")
    for key, number in added:
        click.echo(f"Loaded the built-in template {key}, version {number} (published).")


def _load_builtin_templates(database: Database) -> list[tuple[str, int]]:
    from workflow.library import sync_builtin_templates

    config = config_from_env()
    with database.transaction() as session:
        return [(v.template.key, v.number)
                for v in sync_builtin_templates(session, config["DOCX_TEMPLATE_DIR"])]


@cli.group()
def template() -> None:
    """The template library: add a .docx template (a draft, or published), list them."""


@template.command("add")
@click.argument("docx", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--key", default=None, help="The template's key (default: from the file name); "
              "an existing key gets its next version.")
@click.option("--schema", "schema_path", default=None,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The TOML schema of its terms (default: inferred from the template).")
@click.option("--publish", "publish_now", is_flag=True,
              help="Publish it at once (after checking that its example terms render).")
def template_add(docx: Path, key: str | None, schema_path: Path | None,
                 publish_now: bool) -> None:
    """Add a .docx as a template's next version; every problem is listed when it is refused."""
    from workflow.errors import TemplateProblems
    from workflow.library import add_template, publish_template, template_spec
    from workflow.template_check import MAX_TEMPLATE_BYTES

    if docx.stat().st_size > MAX_TEMPLATE_BYTES:
        _fail(f"{docx.name}: the template is larger than "
              f"{MAX_TEMPLATE_BYTES // (1024 * 1024)} MB, the largest accepted.")
    try:
        schema = schema_path.read_text(encoding="utf-8") if schema_path else None
    except UnicodeDecodeError:
        _fail(f"{schema_path}: not UTF-8 text; the schema is a TOML file.")
    with _database() as database:
        _load_builtin_templates(database)
        try:
            with database.transaction() as session:
                version = add_template(session, docx.read_bytes(), docx.name, None, key=key,
                                       schema=schema)
                if publish_now:
                    publish_template(session, version.template.key, version.number, None)
                spec = template_spec(version)
                added = (version.template.key, version.number, version.status)
        except TemplateProblems as exc:
            click.echo(f"{docx.name} was refused ({len(exc.problems)} "
                       f"problem{'s' if len(exc.problems) != 1 else ''}); nothing was stored:",
                       err=True)
            for problem in exc.problems:
                click.echo(f"  - {problem}", err=True)
            sys.exit(EXIT_ERROR)
        except CounterpartError as exc:
            _fail(str(exc))
    key, number, status = added
    click.echo(f"Added {key}, version {number} ({status}): {spec.title}")
    click.echo(f"  terms: {', '.join(f'{k} ({f.type})' for k, f in spec.fields.items())}")
    click.echo(f"  parties: {', '.join(p.role for p in spec.parties) or 'none'}")
    if status != "published":
        click.echo("  Publish it from the Templates page, or add it again with --publish.")


@template.command("list")
def template_list() -> None:
    """List the library's templates: key, published version, newest version and title."""
    from workflow.library import library_templates

    with _database() as database:
        _load_builtin_templates(database)
        with database.transaction() as session:
            templates = library_templates(session)
    rows = [("key", "published", "newest", "title")]
    rows += [(t.key, str(t.published or "-"), f"{t.newest} ({t.newest_status})", t.title)
             for t in templates]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
                   + "  " + row[-1])


@cli.command("create-user")
@click.argument("email")
@click.option("--role", type=click.Choice(ROLES), default=None,
              help="What the account may do: admin (templates, users, webhooks, settings, and "
                   "letters), staff (letters: create, edit, send, upload, void) or read_only "
                   "(see and download letters). Staff unless given.")
@click.option("--admin", is_flag=True, help="The same as --role admin.")
@click.option("--generate", is_flag=True,
              help="Generate a password and print it instead of asking for one.")
def create_user_command(email: str, role: str | None, admin: bool, generate: bool) -> None:
    """Create an account; asks for its password unless --generate is given."""
    if admin and role not in (None, "admin"):
        _fail(f"--admin and --role {role} contradict each other; give one of them.")
    chosen = "admin" if admin else role or "staff"
    password = generate_password() if generate else click.prompt(
        "Password", hide_input=True, confirmation_prompt=True)
    with _database() as database:
        try:
            with database.transaction() as session:
                user = create_user(session, email, password, role=chosen)
                address = user.email
        except CounterpartError as exc:
            _fail(str(exc))
    kind = {"admin": "administrator", "staff": "staff", "read_only": "read-only"}[chosen]
    click.echo(f"Created the {kind} account {address}.")
    if generate:
        click.echo(f"Its password (shown once): {password}")


@cli.command("create-first-admin")
@click.option("--email", envvar=FIRST_ADMIN_ENV, default=DEFAULT_ADMIN_EMAIL,
              show_default=True, help=f"The account's email (or ${FIRST_ADMIN_ENV}).")
def create_first_admin(email: str) -> None:
    """Create an administrator if there is no account yet, and print its password once."""
    with _database() as database:
        try:
            with database.transaction() as session:
                if count_users(session):
                    return
                password = generate_password()
                user = create_user(session, email, password, is_admin=True)
                address = user.email
        except CounterpartError as exc:
            _fail(str(exc))
    click.echo("")
    click.echo("First run: an administrator account was created.")
    click.echo(f"  email:    {address}")
    click.echo(f"  password: {password}")
    click.echo("Write the password down now: it is not stored and will not be shown again.")
    click.echo("")


@cli.command("set-password")
@click.argument("email")
@click.option("--generate", is_flag=True,
              help="Generate a password and print it instead of asking for one.")
def set_password_command(email: str, generate: bool) -> None:
    """Give an account a new password (ending its sessions and revoking its API tokens)."""
    password = generate_password() if generate else click.prompt(
        "New password", hide_input=True, confirmation_prompt=True)
    with _database() as database:
        try:
            with database.transaction() as session:
                set_password(session, email, password)
        except CounterpartError as exc:
            _fail(str(exc))
    click.echo(f"The password of {email.strip().lower()} was changed; its sessions ended and "
               "its API tokens were revoked.")
    if generate:
        click.echo(f"The new password (shown once): {password}")


@cli.command("create-token")
@click.argument("email")
@click.option("--label", default="", help="What the token is for, to recognise it later.")
@click.option("--days", default=DEFAULT_TOKEN_DAYS, show_default=True,
              type=click.IntRange(1, MAX_TOKEN_DAYS), help="Days until the token expires.")
def create_token(email: str, label: str, days: int) -> None:
    """Print a new API token for an account (only its hash is stored)."""
    with _database() as database:
        try:
            with database.transaction() as session:
                token = create_api_token(session, email, label, days=days)
        except CounterpartError as exc:
            _fail(str(exc))
    click.echo(token)


def _when(moment: dt.datetime | None) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC") if moment else "never"


@cli.command("list-tokens")
@click.argument("email")
def list_tokens(email: str) -> None:
    """List an account's API tokens: label, dates and state (never the tokens themselves)."""
    with _database() as database:
        try:
            with database.transaction() as session:
                tokens = list_api_tokens(session, email)
        except CounterpartError as exc:
            _fail(str(exc))
    if not tokens:
        click.echo(f"{email.strip().lower()} has no API tokens.")
        return
    rows = [("label", "created", "last used", "expires", "state")]
    rows += [(t.label or "(no label)", _when(t.created_at), _when(t.last_used_at),
              _when(t.expires_at),
              f"revoked {_when(t.revoked_at)}" if t.revoked_at else t.state) for t in tokens]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
                   + "  " + row[-1])


@cli.command("revoke-token")
@click.argument("email")
@click.option("--label", default=None, help="Revoke the tokens with this label.")
@click.option("--all", "revoke_all", is_flag=True, help="Revoke every token of the account.")
def revoke_token(email: str, label: str | None, revoke_all: bool) -> None:
    """Revoke an account's API tokens by label, or all of them; they stop working at once."""
    if (label is None) == (not revoke_all):
        _fail("Give either --label LABEL or --all.")
    with _database() as database:
        try:
            with database.transaction() as session:
                count = revoke_api_tokens(session, email, label=None if revoke_all else label)
        except CounterpartError as exc:
            _fail(str(exc))
    noun = "token was" if count == 1 else "tokens were"
    click.echo(f"{count} API {noun} revoked for {email.strip().lower()}.")


@cli.command("disable-user")
@click.argument("email")
def disable_user_command(email: str) -> None:
    """Disable an account: no sign-in, its sessions end and its API tokens are revoked."""
    with _database() as database:
        try:
            with database.transaction() as session:
                address = disable_user(session, email).email
        except CounterpartError as exc:
            _fail(str(exc))
    click.echo(f"The account {address} is disabled: its sessions ended and its API tokens "
               "were revoked.")


@cli.command("enable-user")
@click.argument("email")
def enable_user_command(email: str) -> None:
    """Let a disabled account sign in again (make it new API tokens if it needs them)."""
    with _database() as database:
        try:
            with database.transaction() as session:
                address = enable_user(session, email).email
        except CounterpartError as exc:
            _fail(str(exc))
    click.echo(f"The account {address} may sign in again.")


@cli.command()
@click.option("--workers", default=None, type=click.IntRange(1, 64),
              help="Jobs run at once, each in a thread (default: COUNTERPART_WORKER_THREADS, "
                   "or 2).")
def worker(workers: int | None) -> None:
    """Run background jobs (PDFs, assembly, notices, webhooks, sweeps) until interrupted.

    Uses the same settings as the app (``COUNTERPART_DATA_DIR``, ``COUNTERPART_DATABASE_URL``,
    ``COUNTERPART_QUEUE_URL``, ...). Any number of workers may run beside ``counterpart serve
    --no-worker``, on this machine or others sharing the database. Ctrl+C (SIGINT) lets
    running jobs finish first; SIGTERM stops at once and hands running jobs back to the queue.
    """
    # Ctrl+C stops a worker even while it starts (a shell may start it with SIGINT ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        from workflow import jobs

        from . import create_app
        from .jobs import worker_options

        _configure_logging()
        app = create_app({"PROXY_FIX": False})
    except (ConfigError, CounterpartError) as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        click.echo("Counterpart worker stopped before it started.")
        return
    if jobs.is_immediate():
        _fail("COUNTERPART_QUEUE_URL is immediate: jobs run in the web process itself, so a "
              "worker has nothing to do. Unset it to use the queue.")
    options = worker_options(app.config, workers=workers)
    # LibreOffice starts now, so that the first letter PDF does not wait for it.
    app.extensions["counterpart.documents"].warm_up()

    def ready() -> None:
        click.echo(f"Counterpart worker {options.worker_id} is running {options.workers} "
                   f"jobs at once from {jobs.describe_queue()} (press Ctrl+C to stop)")
        sys.stdout.flush()

    try:
        jobs.run_worker(options, ready=ready)
    finally:
        click.echo(f"Counterpart worker {options.worker_id} stopped.")
        app.extensions["counterpart.documents"].close(close_converter=True)
        app.extensions["counterpart.db"].dispose()


def _configure_logging() -> None:
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("huey").setLevel(logging.WARNING)


WORKER_STOP_SECONDS = 40  # a worker's own shutdown timeout (30 s) and a little more
_PR_SET_PDEATHSIG = 1


def _load_prctl() -> Any:
    """Return libc's prctl, resolved here because a pre-exec hook must not load libraries."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()


def _die_with_parent() -> None:
    """Ask the kernel to stop this child (SIGTERM) when the server dies (runs pre-exec)."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _start_worker_child(threads: int) -> subprocess.Popen[bytes]:
    """Start ``counterpart worker`` as a child of this server, killed if the server dies."""
    # A session of its own: Ctrl+C reaches the server alone, which passes on one SIGINT
    # (a second one would cut the worker's graceful stop short).
    return subprocess.Popen([sys.executable, "-m", "web.cli", "worker", "--workers",
                             str(threads)], preexec_fn=_die_with_parent, start_new_session=True)


def _stop_worker_child(child: subprocess.Popen[bytes]) -> None:
    """Let the worker finish its running jobs (SIGINT), then kill it if it takes too long."""
    if child.poll() is None:
        child.send_signal(signal.SIGINT)
    try:
        child.wait(WORKER_STOP_SECONDS)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


RESTART_FIRST_SECONDS = 1.0  # the wait before restarting a worker that ended, doubling ...
RESTART_MAX_SECONDS = 60.0  # ... up to this
RESTART_RESET_SECONDS = 60.0  # a worker that ran this long starts the doubling afresh


def _exit_description(returncode: int) -> str:
    """Say how a process ended: "was killed by SIGKILL (signal 9)", "exited with status 1"."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "a signal"
        return f"was killed by {name} (signal {-returncode})"
    return f"exited with status {returncode}"


class WorkerSupervisor:
    """The server's background worker: started as a child, started again when it ends.

    A watching thread waits for the child; when it ends while the server runs (killed, or
    crashed), it logs an ERROR with the exit status or signal and starts a new one after a
    wait of 1 s, doubling up to 60 s while new ones keep ending (so one that fails at start
    does not spin). :meth:`stop` ends the restarts, then stops the child.
    """

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._child: subprocess.Popen[bytes] | None = None
        self._watcher: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        """The process id of the current worker child (None between two of them)."""
        child = self._child
        return child.pid if child is not None else None

    def start(self) -> int:
        """Start the first worker child and the thread that watches it; return its pid."""
        self._child = _start_worker_child(self.threads)
        # The watcher lives as long as the server: a child asks to die with the thread that
        # started it (PR_SET_PDEATHSIG follows the thread), so restarts happen there.
        self._watcher = threading.Thread(target=self._watch, name="counterpart-worker-watch",
                                         daemon=True)
        self._watcher.start()
        return self._child.pid

    def _watch(self) -> None:
        delay = RESTART_FIRST_SECONDS
        child = self._child
        while child is not None:
            started = time.monotonic()
            returncode = child.wait()
            if self._stopping.is_set():
                return
            if time.monotonic() - started >= RESTART_RESET_SECONDS:
                delay = RESTART_FIRST_SECONDS
            log.error("The background worker (process %d) %s; starting a new one in %g s.",
                      child.pid, _exit_description(returncode), delay)
            child, delay = self._restart(delay)

    def _restart(self, delay: float) -> tuple[subprocess.Popen[bytes] | None, float]:
        """Start a new child after ``delay`` seconds; return it (None once the server stops)
        and the wait before the next restart."""
        while not self._stopping.wait(delay):
            delay = min(delay * 2, RESTART_MAX_SECONDS)
            with self._lock:
                if self._stopping.is_set():
                    break
                try:
                    self._child = _start_worker_child(self.threads)
                except OSError as exc:
                    log.error("A new background worker could not be started (%s); trying "
                              "again in %g s.", exc, delay)
                    continue
            log.info("A new background worker runs as process %d.", self._child.pid)
            return self._child, delay
        return None, delay

    def stop(self) -> None:
        """Stop restarting, then let the worker finish its running jobs and stop it."""
        with self._lock:
            self._stopping.set()
            child = self._child
        if child is not None:
            _stop_worker_child(child)
        if self._watcher is not None:
            self._watcher.join(5)


WEB_PROCESSES_ENV = "COUNTERPART_WEB_PROCESSES"
DEFAULT_MAX_REQUESTS = 10_000  # a web process is replaced after this many requests ...
MAX_REQUESTS_JITTER = 0.1  # ... plus up to this share more, so that they are not all at once
_M_ARENA_MAX = -8  # glibc's mallopt parameter


def _web_processes(processes: int) -> int:
    """The number of web processes: ``processes``, or one per core for 0."""
    if processes:
        return processes
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _limit_malloc_arenas() -> None:
    """Keep glibc to two malloc arenas in this process and its children.

    Each thread that allocates may get an arena of its own, and freed memory stays in it:
    with 8 threads and more a process keeps growing. ``MALLOC_ARENA_MAX`` is read when a
    program starts (the worker child and LibreOffice inherit it); this process, already
    running, is told with ``mallopt`` before it starts threads or forks its web processes.
    """
    os.environ.setdefault("MALLOC_ARENA_MAX", "2")
    try:
        ctypes.CDLL(None).mallopt(_M_ARENA_MAX, int(os.environ["MALLOC_ARENA_MAX"]))
    except (OSError, AttributeError, ValueError):
        pass  # not glibc: nothing to limit


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=5000, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on (0 picks a free one).")
@click.option("--processes", envvar=WEB_PROCESSES_ENV, default=0, show_default=True,
              type=click.IntRange(0, 64),
              help=f"Web processes (0: one per core; also {WEB_PROCESSES_ENV}). 1 serves "
                   "from this process alone.")
@click.option("--threads", default=8, show_default=True, type=click.IntRange(1, 64),
              help="Requests served at once by each web process.")
@click.option("--connections-per-address", default=DEFAULT_CONNECTIONS_PER_ADDRESS,
              show_default=True, type=click.IntRange(0, CONNECTION_LIMIT),
              help=f"Connections one client address may hold open, of the {CONNECTION_LIMIT} "
                   f"each web process accepts (0: no limit); a trusted proxy is not counted.")
@click.option("--max-requests", default=DEFAULT_MAX_REQUESTS, show_default=True,
              type=click.IntRange(0),
              help="With several web processes, each is replaced by a fresh one after this "
                   "many requests, plus up to 10% (0: never).")
@click.option("--no-worker", is_flag=True,
              help="Start no background worker (run `counterpart worker` processes beside "
                   "it instead); the same as COUNTERPART_WORKER=none.")
def serve(host: str, port: int, processes: int, threads: int, connections_per_address: int,
          max_requests: int, no_worker: bool) -> None:
    """Run the web app until interrupted (Ctrl+C or SIGTERM stop it gracefully).

    With one web process (``--processes 1``) the app runs here under waitress. With several
    (the default: one per core, ``--processes`` or ``COUNTERPART_WEB_PROCESSES``), gunicorn's
    arbiter binds the port and forks them; each makes its own app (database connections,
    threads, LibreOffice) after the fork and serves with waitress, so that slow clients
    cannot hold its threads. A web process that dies is replaced, and each is replaced after
    ``--max-requests`` requests (plus up to 10%), which bounds its memory. The share of
    connections per client address is counted across the processes, and the rate limits on
    failures too: in Redis (``COUNTERPART_REDIS_URL``) or else in a file the processes share.

    Behind a reverse proxy (``COUNTERPART_PROXY_COUNT``), waitress applies the proxy's
    ``X-Forwarded-*`` headers, and only for requests from ``COUNTERPART_TRUSTED_PROXY``.
    A background worker (``counterpart worker``) runs as a child process, started again if it
    ends (logged as an error), and stops with the server, unless ``--no-worker`` or
    ``COUNTERPART_WORKER=none``. glibc's malloc arenas are limited to two
    (``MALLOC_ARENA_MAX``, unless set otherwise) in every process.
    """
    _configure_logging()
    _limit_malloc_arenas()
    processes = _web_processes(processes)
    if processes == 1:
        _serve_in_this_process(host, port, threads, connections_per_address, no_worker)
    else:
        _serve_in_processes(host, port, processes, threads, connections_per_address,
                            max_requests, no_worker)


def _echo_running(host: str, port: int, config: dict[str, Any], jobs_line: str,
                  processes_line: str | None = None) -> None:
    url_host = f"[{host}]" if ":" in host else host
    click.echo(f"Counterpart is running at http://{url_host}:{port}/ "
               f"(data in {config['DATA_DIR']}; press Ctrl+C to stop)")
    if processes_line:
        click.echo(processes_line)
    if config["PROXY_COUNT"]:
        count = config["PROXY_COUNT"]
        proxies = "1 reverse proxy" if count == 1 else f"{count} reverse proxies"
        click.echo(f"Behind {proxies}: X-Forwarded-* headers are trusted from "
                   f"{config['TRUSTED_PROXY']} only.")
    click.echo(jobs_line)
    sys.stdout.flush()


def _serve_in_this_process(host: str, port: int, threads: int, connections_per_address: int,
                           no_worker: bool) -> None:
    """``counterpart serve --processes 1``: waitress in this process."""
    from workflow import jobs

    from . import create_app
    from .documents import get_documents
    from .server import create_app_server

    try:
        app = create_app({"PROXY_FIX": False})
    except ConfigError as exc:
        _fail(str(exc))
    supervisor: WorkerSupervisor | None = None
    in_process = threading.Event()
    if jobs.is_immediate():
        jobs.run_in_process(in_process)  # periodic jobs and retries, without a worker
        jobs_line = "Background jobs run in this process (COUNTERPART_QUEUE_URL=immediate)."
    elif no_worker or app.config["WORKER"] == "none":
        jobs_line = (f"No worker started: run `counterpart worker` to take jobs from "
                     f"{jobs.describe_queue()}.")
    else:
        supervisor = WorkerSupervisor(app.config["WORKER_THREADS"])
        jobs_line = (f"A background worker runs as process {supervisor.start()} (started "
                     "again if it ends).")
    with app.app_context():
        documents = get_documents()
    documents.warm_up()  # the signers' own copies are converted in the request
    server = create_app_server(
        app, host=host, port=port, threads=threads,
        max_request_body_size=app.config["MAX_CONTENT_LENGTH"] + 1024 * 1024,
        proxy_count=app.config["PROXY_COUNT"], trusted_proxy=app.config["TRUSTED_PROXY"],
        connections_per_address=connections_per_address)

    def stop(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    _echo_running(host, getattr(server, "effective_port", port), app.config, jobs_line)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        click.echo("Stopping Counterpart…")
        server.close()
        in_process.set()
        if supervisor is not None:
            supervisor.stop()
        documents.close(close_converter=True)
        app.extensions["counterpart.db"].dispose()


def _serve_in_processes(host: str, port: int, processes: int, threads: int,
                        connections_per_address: int, max_requests: int,
                        no_worker: bool) -> None:
    """``counterpart serve`` with several web processes under gunicorn's arbiter.

    This process makes no app: it checks the settings, creates or migrates the database
    (once, before the web processes start, so that they do not race to), starts the
    background worker child, and leaves the rest to :class:`web.server.PreforkServer`.
    """
    from workflow import jobs

    from . import create_app
    from .documents import get_documents
    from .server import PreforkServer

    try:
        config = config_from_env()
        # What each process's create_app would refuse, refused here once with its message,
        # before any process starts (and the key generated once, not raced for).
        secret_key_for(config)
    except ConfigError as exc:
        _fail(str(exc))
    open_database(config["DATA_DIR"], config["DATABASE_URL"]).dispose()
    queue_url = jobs.queue_url_for(config)  # read, not opened: the processes open it
    limits_folder: Path | None = None
    overrides: dict[str, Any] = {"PROXY_FIX": False}
    if not config.get("REDIS_URL"):
        from .ratelimit import SHARED_FILE_SCHEME
        limits_folder = Path(tempfile.mkdtemp(prefix="counterpart-limits-"))
        overrides["RATE_LIMIT_STORAGE"] = (
            f"{SHARED_FILE_SCHEME}://{limits_folder / 'limits.sqlite3'}")
    supervisor: WorkerSupervisor | None = None
    state: dict[str, Any] = {}

    def make_app(slot: int) -> tuple[Any, Callable[[], None]]:
        app = create_app(overrides)
        in_process = threading.Event()
        if queue_url == "immediate" and slot == 0:
            jobs.run_in_process(in_process)  # in one web process only
        with app.app_context():
            documents = get_documents()
        documents.warm_up()  # each process has its own LibreOffice, started after the fork

        def close() -> None:
            in_process.set()
            documents.close(close_converter=True)
            app.extensions["counterpart.db"].dispose()
        return app, close

    def when_ready(bound: int) -> None:
        nonlocal supervisor
        if state.get("jobs_line") is None:
            state["jobs_line"] = _start_jobs_line(no_worker, config, queue_url)
            if state["jobs_line"][1] is not None:
                supervisor = state["jobs_line"][1]
        _echo_running(host, bound, config, state["jobs_line"][0],
                      f"{processes} web processes of {threads} threads each (gunicorn "
                      f"arbiter, process {os.getpid()}).")

    def on_exit() -> None:
        click.echo("Stopping Counterpart…")
        if supervisor is not None:
            supervisor.stop()
        if limits_folder is not None:
            shutil.rmtree(limits_folder, ignore_errors=True)

    server = PreforkServer(
        make_app, host=host, port=port, processes=processes, threads=threads,
        max_request_body_size=config["MAX_CONTENT_LENGTH"] + 1024 * 1024,
        proxy_count=config["PROXY_COUNT"], trusted_proxy=config["TRUSTED_PROXY"],
        connections_per_address=connections_per_address, max_requests=max_requests,
        max_requests_jitter=int(max_requests * MAX_REQUESTS_JITTER),
        when_ready=when_ready, on_exit=on_exit)
    main_process = os.getpid()
    try:
        server.run()
    finally:
        # A web process ends by SystemExit raised through these frames, copied by its fork:
        # only the main process removes the folder the processes share.
        if limits_folder is not None and os.getpid() == main_process:
            shutil.rmtree(limits_folder, ignore_errors=True)


def _start_jobs_line(no_worker: bool, config: dict[str, Any], queue_url: str
                     ) -> tuple[str, WorkerSupervisor | None]:
    """Start the background worker child unless told not to; say where jobs run."""
    from workflow import jobs

    if queue_url == "immediate":
        return ("Background jobs run in the first web process "
                "(COUNTERPART_QUEUE_URL=immediate)."), None
    if no_worker or config["WORKER"] == "none":
        return (f"No worker started: run `counterpart worker` to take jobs from "
                f"{jobs.describe_queue(queue_url)}."), None
    supervisor = WorkerSupervisor(config["WORKER_THREADS"])
    return (f"A background worker runs as process {supervisor.start()} (started again if "
            "it ends)."), supervisor


def main() -> None:
    """Run the command line."""
    cli(prog_name="counterpart")


if __name__ == "__main__":
    main()
