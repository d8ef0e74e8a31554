"""The job queue: enqueue after commit (and never on rollback), retries with backoff, periodic
jobs once per period across workers, the queue's storage chosen from the settings, and the
in-flight ledger that gives a dead worker's jobs to another."""

from __future__ import annotations

import datetime as dt
import pickle
import time
from pathlib import Path

import pytest
from huey.storage import SqliteStorage
from sqlalchemy import select

from workflow import jobs
from workflow.models import AppSetting

RAN: list[tuple[str, object]] = []
FAILURES_LEFT = {"count": 0}


@jobs.job(retries=0)
def remember(value: object) -> None:
    """Record the value, and whether the enqueueing transaction's row is visible."""
    with jobs.runtime().db.transaction() as session:
        row = session.get(AppSetting, "job-test")
        RAN.append(("ran", value if row is None else (value, row.value)))


@jobs.job(retries=3, retry_delay=10, retry_backoff=2.0)
def flaky(value: object) -> None:
    """Fail as many times as FAILURES_LEFT says, then record the value."""
    if FAILURES_LEFT["count"]:
        FAILURES_LEFT["count"] -= 1
        raise RuntimeError("the mail server is away")
    RAN.append(("flaky", value))


@jobs.periodic(minutes=1)
def every_minute() -> str:
    """Record that the periodic job ran."""
    RAN.append(("periodic", None))
    return "ran"


@pytest.fixture(autouse=True)
def _immediate(database):
    RAN.clear()
    FAILURES_LEFT["count"] = 0
    with jobs.immediate(jobs.Runtime(database)):
        yield


def _setting(session, value: str) -> None:
    session.add(AppSetting(key="job-test", value=value))


def test_a_job_runs_after_its_transaction_commits_and_sees_what_it_wrote(database):
    with database.transaction() as session:
        _setting(session, "written")
        jobs.enqueue_after_commit(session, remember, 1)
        session.flush()
        assert RAN == []  # not yet: the transaction is still open
    assert RAN == [("ran", (1, "written"))]


def test_a_rolled_back_transaction_enqueues_nothing(database):
    with pytest.raises(RuntimeError), database.transaction() as session:
        _setting(session, "never")
        jobs.enqueue_after_commit(session, remember, 2)
        raise RuntimeError("the request failed")
    with database.transaction() as session:
        jobs.enqueue_after_commit(session, remember, 3)
    assert RAN == [("ran", 3)]  # only the committed one, and the rolled-back row is absent


def test_a_session_committed_twice_enqueues_each_job_once(database):
    with database.session() as session:
        jobs.enqueue_after_commit(session, remember, "a")
        session.commit()
        session.commit()
        jobs.enqueue_after_commit(session, remember, "b")
        session.rollback()
        jobs.enqueue_after_commit(session, remember, "c")
        session.commit()
    assert RAN == [("ran", "a"), ("ran", "c")]


def test_a_job_enqueued_in_a_rolled_back_savepoint_is_dropped_and_a_released_one_kept(
        database):
    with database.transaction() as session:
        jobs.enqueue_after_commit(session, remember, "outer")
        with pytest.raises(RuntimeError), session.begin_nested():
            jobs.enqueue_after_commit(session, remember, "undone")
            with session.begin_nested():  # released inside the savepoint rolled back
                jobs.enqueue_after_commit(session, remember, "undone inner")
            raise RuntimeError("this step failed")
        with session.begin_nested():
            jobs.enqueue_after_commit(session, remember, "kept")
            with pytest.raises(RuntimeError), session.begin_nested():
                jobs.enqueue_after_commit(session, remember, "undone deeper")
                raise RuntimeError("this step failed too")
        assert RAN == []
    assert RAN == [("ran", "outer"), ("ran", "kept")]


def test_only_jobs_can_be_enqueued(database):
    with database.transaction() as session, pytest.raises(TypeError, match="not a job"):
        jobs.enqueue_after_commit(session, print, 1)


def test_a_failing_job_is_retried_with_exponential_backoff(database):
    FAILURES_LEFT["count"] = 2
    started = dt.datetime.now(dt.UTC)
    with database.transaction() as session:
        jobs.enqueue_after_commit(session, flaky, "x")
    assert RAN == [] and isinstance(jobs.recent_errors()[-1][1], RuntimeError)
    assert jobs.recent_errors()[-1][0].endswith("test_jobs.flaky")
    # The first retry is due 10 s later, not before.
    assert jobs.run_due(started + dt.timedelta(seconds=5)) == 0
    assert jobs.run_due(started + dt.timedelta(seconds=12)) == 1
    assert RAN == []
    # It failed again: the next retry waits twice as long (20 s after that failure).
    assert jobs.run_due(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=15)) == 0
    assert jobs.run_due(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=21)) == 1
    assert RAN == [("flaky", "x")]


def test_a_periodic_job_runs_once_a_period_however_many_workers_fire_it(monkeypatch):
    now = 1_800_000_030.0  # half a minute into a minute
    monkeypatch.setattr(jobs, "periodic_clock", lambda: now)
    assert every_minute.call_local() == "ran"
    assert every_minute.call_local() is None  # a second worker's copy in the same minute
    assert RAN == [("periodic", None)]
    now += 60
    assert every_minute.call_local() == "ran"  # the next minute
    assert RAN == [("periodic", None)] * 2
    name = f"{every_minute.task_class.__module__}.every_minute"
    assert not jobs.claim_periodic_slot(name, int(now // 60))
    assert jobs.claim_periodic_slot(name, int(now // 60) + 1)


def test_the_scheduler_fires_periodic_jobs_at_their_minute():
    every_ten = jobs.periodic(minutes=10)(_ten)
    try:
        assert every_ten.task_class().validate_datetime(dt.datetime(2026, 1, 1, 9, 20))
        assert not every_ten.task_class().validate_datetime(dt.datetime(2026, 1, 1, 9, 21))
    finally:
        every_ten.unregister()


def _ten() -> None:
    """A job every ten minutes."""


def test_slot_claims_on_real_storage_go_to_one_of_two_workers(tmp_path: Path):
    # Two storages on one file, as two worker processes have.
    first, second = (SqliteStorage("counterpart.claims", filename=str(tmp_path / "q.db"))
                     for _ in range(2))
    key = f"periodic:sweep:{int(time.time() // 60)}"
    assert [first.put_if_empty(key, b"1"), second.put_if_empty(key, b"1")] == [True, False]


def test_the_queue_storage_follows_the_settings(tmp_path: Path):
    assert jobs.queue_url_for({"DATA_DIR": tmp_path, "DATABASE_URL": None}) \
        == f"sqlite:///{tmp_path.resolve() / 'queue.db'}"
    pg = "postgresql+psycopg://counterpart:secret@db.example/counterpart"
    assert jobs.queue_url_for({"DATA_DIR": tmp_path, "DATABASE_URL": pg}) == pg
    assert jobs.queue_url_for({"DATA_DIR": tmp_path, "DATABASE_URL": pg,
                               "QUEUE_URL": "redis://localhost:6379/2"}) \
        == "redis://localhost:6379/2"
    assert "secret" not in jobs.describe_queue(pg)
    with pytest.raises(jobs.JobsError, match="COUNTERPART_QUEUE_URL 'ftp://x'"):
        jobs.configure("ftp://x")
    assert jobs.is_immediate()  # a refused setting changes nothing


def test_the_embedded_queue_is_a_private_file_of_its_own(tmp_path: Path, database):
    url = jobs.queue_url_for({"DATA_DIR": tmp_path, "DATABASE_URL": None})
    jobs.configure(url)
    assert not jobs.is_immediate()
    remember("queued")  # outside a transaction: enqueued, not run
    assert RAN == [] and jobs.huey.pending_count() == 1
    queue_file = tmp_path / "queue.db"
    assert queue_file.exists() and queue_file.stat().st_mode & 0o077 == 0
    assert queue_file != Path(database.url.removeprefix("sqlite:///"))


def test_a_dead_workers_job_is_queued_again_once(tmp_path: Path):
    jobs.configure(jobs.queue_url_for({"DATA_DIR": tmp_path, "DATABASE_URL": None}))
    ledger = jobs.ledger()
    orphan, running = remember.s("in flight"), remember.s("still running")
    ledger.heartbeat("dead")
    ledger.heartbeat("alive")
    ledger.record("dead", orphan)
    ledger.record("alive", running)
    assert set(ledger.entries()) == {orphan.id, running.id}
    assert ledger.take_over(60) == []  # both heartbeated just now
    later = time.time() + 61
    ledger.workers.put_data("alive", pickle.dumps(later))  # the live one kept beating
    assert ledger.take_over(60, now=later) == [orphan.id]
    assert ledger.take_over(60, now=later) == []  # taken once
    assert set(ledger.entries()) == {running.id}
    (queued,) = [jobs.huey.deserialize_task(d) for d in jobs.huey.storage.enqueued_items()]
    assert queued.id == orphan.id and queued.args == ("in flight",)


def test_two_sweepers_take_an_entry_once(tmp_path: Path):
    jobs.configure(jobs.queue_url_for({"DATA_DIR": tmp_path, "DATABASE_URL": None}))
    first = jobs.ledger()
    second = jobs.Ledger(jobs._storage_factory(jobs._queue_url))  # another process's view
    task = remember.s("orphan")
    first.record("gone", task)
    entry = second.entries()[task.id]
    assert first._requeue(task.id, entry.worker) is True
    assert second._requeue(task.id, entry.worker) is False
    assert jobs.huey.pending_count() == 1


def test_a_stopping_worker_hands_its_running_jobs_back(tmp_path: Path):
    jobs.configure(jobs.queue_url_for({"DATA_DIR": tmp_path, "DATABASE_URL": None}))
    ledger = jobs.ledger()
    ledger.record("me", remember.s(1))
    ledger.record("other", remember.s(2))
    assert len(ledger.hand_back("me")) == 1
    assert [e.worker for e in ledger.entries().values()] == ["other"]
    assert jobs.huey.pending_count() == 1


def test_immediate_jobs_use_the_database_that_enqueued_them(tmp_path: Path, database):
    from workflow.db import open_database

    other = open_database(tmp_path / "other")
    try:
        with other.transaction() as session:
            _setting(session, "the other database")
            jobs.enqueue_after_commit(session, remember, "o")
        with database.transaction() as session:
            jobs.enqueue_after_commit(session, remember, "d")
    finally:
        other.dispose()
    assert RAN == [("ran", ("o", "the other database")), ("ran", "d")]


def test_the_expiry_sweep_is_a_periodic_job(database):
    assert "workflow.jobs.expire_signing_links" in jobs.huey._registry._registry
    with database.transaction() as session:
        assert session.scalars(select(AppSetting)).all() == []
    assert jobs.expire_signing_links.call_local() == 0  # nothing out for signature


@pytest.fixture()
def redis_url(tmp_path: Path):
    """A private redis-server on loopback."""
    import shutil
    import subprocess

    import redis
    from serving import free_port

    server = shutil.which("redis-server")
    assert server, "redis-server is missing: make test installs Debian's redis-server"
    port = free_port()
    process = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--save",
                                "", "--appendonly", "no", "--dir", str(tmp_path)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
    client.close()
    yield url
    process.terminate()
    process.wait(10)


def test_the_queue_and_its_ledger_work_on_redis(redis_url, monkeypatch):
    jobs.configure(jobs.queue_url_for({"DATA_DIR": "/nonexistent", "QUEUE_URL": redis_url}))
    remember("on redis")
    assert jobs.huey.pending_count() == 1
    (task,) = [jobs.huey.deserialize_task(d) for d in jobs.huey.storage.enqueued_items()]
    assert jobs.huey.dequeue().id == task.id  # a worker takes it...
    ledger = jobs.ledger()
    ledger.heartbeat("gone")
    ledger.record("gone", task)  # ...and dies running it
    assert ledger.take_over(60, now=time.time() + 61) == [task.id]
    assert ledger.take_over(60, now=time.time() + 61) == []
    assert jobs.huey.dequeue().args == ("on redis",)
    monkeypatch.setattr(jobs, "periodic_clock", lambda: 1_800_000_030.0)
    assert every_minute.call_local() == "ran" and every_minute.call_local() is None


def test_processes_starting_together_on_a_new_database_all_get_the_queue(tmp_path: Path,
                                                                          database_url):
    """The web processes and the worker of a new install create the queue's tables at once:
    each gets a working queue (PostgreSQL refuses a second CREATE TABLE of the same name
    running at the same time, so they take turns)."""
    import threading

    url = jobs.queue_url_for({"DATABASE_URL": database_url, "DATA_DIR": tmp_path})
    make = jobs._storage_factory(url)
    start, made, failed = threading.Barrier(6), [], []

    def open_queue() -> None:
        start.wait()
        try:
            made.append(make(jobs.QUEUE_NAME))
        except Exception as exc:  # noqa: BLE001 - what each process would die of
            failed.append(exc)

    threads = [threading.Thread(target=open_queue) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert failed == []
    assert len(made) == 6
    made[0].enqueue(b"a job", 0)
    assert made[-1].queue_size() == 1
    for storage in made:
        close = getattr(storage, "close", None)
        if close is not None:
            close()
