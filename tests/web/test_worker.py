"""Real ``counterpart worker`` processes on one data folder: every job done once, and a job
whose worker is killed mid-way finished by another; ``counterpart serve`` runs its own worker,
starts a new one when it is killed, and stops it when it stops; a letter waiting for a worker
when none is running says so. On PostgreSQL in the PG pass (the queue in the same database)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import lxml.html
import pytest
import queue_jobs
from serving import ROOT, ServerProcess

from workflow import jobs
from workflow.accounts import create_api_token
from workflow.db import Database, open_database

FAST_QUEUE = {
    "COUNTERPART_QUEUE_HEARTBEAT_SECONDS": "1",
    "COUNTERPART_QUEUE_DEAD_AFTER_SECONDS": "5",  # a loaded CI box may pause a process
    "COUNTERPART_QUEUE_POLL_MS": "200",
    jobs.EXTRA_TASK_MODULES_ENV: "queue_jobs",
}


def _environment(data_dir: Path, database_url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COUNTERPART_")}
    env.update(FAST_QUEUE, COUNTERPART_DATA_DIR=str(data_dir),
               COUNTERPART_CONVERTER_PROCESSES="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]))
    if database_url:
        env["COUNTERPART_DATABASE_URL"] = database_url
    return env


class Worker:
    """A ``counterpart worker`` process, its output in a log file."""

    def __init__(self, data_dir: Path, database_url: str | None, name: str) -> None:
        self.log = data_dir / f"worker-{name}.log"
        self._handle = self.log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "web.cli", "worker", "--workers", "2"], cwd=ROOT,
            env=_environment(data_dir, database_url), stdout=self._handle,
            stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_until_running(self, timeout: float = 60) -> Worker:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "is running" in self.log.read_text(errors="replace"):
                return self
            if self.process.poll() is not None:
                raise AssertionError(f"the worker stopped: {self.output()}")
            time.sleep(0.1)
        raise AssertionError(f"the worker did not start: {self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._handle.close()


@pytest.fixture()
def queue_database(tmp_path: Path, database_url: str | None) -> Iterator[tuple[Path, Database]]:
    """A migrated data folder with the test jobs' table, and this process's queue pointed at
    its durable storage (immediate mode again afterwards)."""
    data_dir = tmp_path / "data"
    database = open_database(data_dir, database_url)
    queue_jobs.create_runs_table(database)
    jobs.configure(jobs.queue_url_for({"DATA_DIR": data_dir, "DATABASE_URL": database_url}))
    yield data_dir, database
    jobs.use_immediate()
    database.dispose()


def _wait_for(check, timeout: float, what: str, workers: list[Worker]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    logs = "\n".join(w.output() for w in workers)
    raise AssertionError(f"{what} did not happen within {timeout} s:\n{logs}")


def test_two_workers_do_each_job_once_and_take_over_a_killed_ones_job(queue_database,
                                                                      database_url):
    data_dir, database = queue_database
    workers = [Worker(data_dir, database_url, name) for name in ("a", "b")]
    try:
        for worker in workers:
            worker.wait_until_running()
        # Twenty jobs, each done exactly once, by one worker or the other.
        keys = [f"job-{n}" for n in range(20)]
        for key in keys:
            queue_jobs.write_row(key)
        _wait_for(lambda: len(queue_jobs.runs(database)) >= 20, 30, "20 jobs", workers)
        time.sleep(0.5)  # a job run twice would show now
        done = queue_jobs.runs(database)
        assert Counter(key for key, _, _ in done) == Counter(keys)
        assert {pid for _, _, pid in done} <= {w.pid for w in workers}
        assert jobs.ledger().entries() == {}  # nothing left in flight

        # A slow job whose worker is killed mid-way: Huey had already taken it off the queue.
        queue_jobs.slow_write("slow", 3.0)
        slow = lambda: [run for run in queue_jobs.runs(database) if run[0] == "slow"]  # noqa: E731
        _wait_for(slow, 20, "the slow job's start", workers)
        [(_, stage, pid)] = slow()
        assert stage == "started"
        killed = next(w for w in workers if w.pid == pid)
        survivor = next(w for w in workers if w is not killed)
        os.kill(killed.pid, signal.SIGKILL)
        killed.process.wait(10)
        _wait_for(lambda: ("slow", "done", survivor.pid) in slow(), 30, "the takeover", workers)
        assert slow() == [("slow", "started", killed.pid), ("slow", "started", survivor.pid),
                          ("slow", "done", survivor.pid)]
        assert "is queued again" in survivor.output()
        assert jobs.ledger().entries() == {}
    finally:
        for worker in workers:
            worker.stop()
    assert survivor.process.returncode == 0, survivor.output()
    # A clean stop removes the worker's heartbeat; the killed one's is left to go stale.
    assert set(jobs.ledger().heartbeats()) <= {killed_id(killed)}


def killed_id(worker: Worker) -> str:
    """The worker id a worker process printed when it started."""
    line = next(line for line in worker.output().splitlines() if "is running" in line)
    return line.split("Counterpart worker ", 1)[1].split(" ", 1)[0]


def test_serve_runs_a_worker_child_that_stops_with_it(queue_database, database_url):
    data_dir, database = queue_database
    server = ServerProcess(data_dir, database_url, threads=2,
                           environment=_environment(data_dir, database_url))
    with server:
        queue_jobs.write_row("served")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not queue_jobs.runs(database):
            time.sleep(0.1)
        runs = queue_jobs.runs(database)
        assert [(key, stage) for key, stage, _ in runs] == [("served", "done")], \
            server.log.read_text()[-3000:]
        worker_pid = runs[0][2]
        assert worker_pid != server.process.pid  # a child process did it
        assert "A background worker runs as process" in server.log.read_text()
    assert server.process.returncode == 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(worker_pid):
        time.sleep(0.1)
    assert not _alive(worker_pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_serve_starts_a_new_worker_when_its_worker_is_killed(data_dir, database_url,
                                                             credentials, reference_terms):
    database = open_database(data_dir, database_url)
    with database.transaction() as session:
        token = create_api_token(session, credentials["staff"][0], "restart")
    database.dispose()
    server = ServerProcess(data_dir, database_url, threads=2,
                           environment=_environment(data_dir, database_url))
    log = lambda: server.log.read_text(errors="replace")  # noqa: E731
    pids = lambda: [int(pid) for pid in re.findall(r"runs as process (\d+)", log())]  # noqa: E731
    with server, httpx.Client(timeout=60,
                              headers={"Authorization": f"Bearer {token}"}) as client:
        _wait_until(lambda: "is running" in log(), 60, "the first worker", log)
        [first] = pids()
        os.kill(first, signal.SIGKILL)
        killed_at = time.monotonic()
        _wait_until(lambda: len(pids()) == 2, 15, "a new worker", log)
        assert time.monotonic() - killed_at < 10
        second = pids()[1]
        assert second != first and _alive(second)
        assert re.search(rf"ERROR .*\(process {first}\) was killed by SIGKILL \(signal 9\); "
                         r"starting a new one in 1 s", log()), log()[-3000:]

        # A letter created now gets its PDF from the new worker.
        answer = client.post(f"{server.url}/api/letters",
                             json={"template": "separation_letter", "terms": reference_terms})
        assert answer.status_code == 201, answer.text
        letter_url = f"{server.url}/api/letters/{answer.json()['id']}"

        def pdf_status() -> str:
            [version] = client.get(letter_url).json()["versions"]
            return next(d["status"] for d in version["documents"] if d["kind"] == "letter_pdf")

        _wait_until(lambda: pdf_status() == "ready", 90, "the letter's PDF", log)
    assert server.process.returncode == 0
    assert log().count("runs as process") == 2  # no restart while the server stopped


def _wait_until(check, timeout: float, what: str, log) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} did not happen within {timeout} s:\n{log()[-3000:]}")


def test_a_letter_waiting_for_a_worker_says_when_none_is_running(app_config, tmp_path,
                                                                  reference_terms, sign_in,
                                                                  credentials):
    from web import create_app
    from web.jobs import NO_WORKER_NOTE

    app = create_app({**app_config, "QUEUE_URL": f"sqlite:///{tmp_path / 'queue.db'}"})
    try:
        with app.app_context(), app.extensions["counterpart.db"].transaction() as session:
            token = create_api_token(session, credentials["staff"][0], "tests")
        client = sign_in(app.test_client())
        api = {"Authorization": f"Bearer {token}"}
        answer = client.post("/api/letters", headers=api,
                             json={"template": "separation_letter", "terms": reference_terms})
        letter_id = answer.json["id"]

        def pdf() -> dict:
            [version] = client.get(f"/api/letters/{letter_id}", headers=api).json["versions"]
            return {d["kind"]: d for d in version["documents"]}["letter_pdf"]

        def notice() -> str:
            page = lxml.html.fromstring(client.get(f"/letters/{letter_id}").text)
            [element] = page.xpath("//*[@data-status-url]")
            return " ".join(element.text_content().split())

        # The job is queued and no worker has ever heartbeated.
        assert pdf()["status"] == "pending" and pdf()["note"] == NO_WORKER_NOTE
        assert client.get(f"/letters/{letter_id}/status").json["worker_note"] == NO_WORKER_NOTE
        assert notice().startswith(f"Waiting for a background worker {NO_WORKER_NOTE}")

        # A worker heartbeats (on another machine, say): the PDF is being made again.
        jobs.ledger().heartbeat("elsewhere:1:worker")
        assert pdf()["note"] is None
        assert client.get(f"/letters/{letter_id}/status").json["worker_note"] is None
        assert notice().startswith("Generating PDF… This takes a second or two")
        # Its heartbeat goes stale: nobody is running again.
        dead_after = app.config["QUEUE_DEAD_AFTER_SECONDS"]
        assert jobs.worker_running(dead_after)
        assert not jobs.worker_running(dead_after, now=time.time() + dead_after + 1)
    finally:
        jobs.use_immediate()
        app.extensions["counterpart.documents"].close()
        app.extensions["counterpart.db"].dispose()
