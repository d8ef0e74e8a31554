"""Proof at scale: two app servers and two workers on one database, fifty letters at once.

Two ``counterpart serve --no-worker`` processes take the requests, two ``counterpart worker``
processes run every job (letter PDFs, assemblies, the outbox, notices, webhooks), a real SMTP
server (aiosmtpd) takes the notices and a real HTTP server receives the webhooks. Fifty letters
are created and sent through the API, every signer is reminded by sweeps running in both
workers at once, then all hundred signers open their links and sign at the same moment,
alternating the servers, and one worker is killed (SIGKILL) in the middle of an assembly.
Every email then went out exactly once per recipient, every webhook event arrived once with
one id, and every letter was executed exactly once.

The worker that is killed runs one job at a time: stopped first (SIGSTOP), its in-flight ledger
then says exactly which job it dies in, and the test kills it only inside an assembly. A worker
killed while it hands a notice to the mail server (or POSTs a webhook) cannot know whether the
message arrived; that notice is sent again 10 minutes later (at least once, never zero times),
which is a property of email, not of the queue, and is tested in tests/workflow/test_notices.py.

Runs in the PostgreSQL pass (``make test-postgres``): that is where several processes share a
database server. On SQLite files it is skipped (see ``pytestmark``).
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import scale_jobs
from serving import ROOT, ServerProcess, free_port
from sqlalchemy import func, select, update
from support import TEST_DATABASE_ENV, server_database_url
from webhook_receiver import Receiver, webhook_receiver

from workflow import jobs, notices
from workflow.accounts import create_api_token
from workflow.audit import verify_chain
from workflow.db import Database
from workflow.models import Counterpart, Document, Envelope, Letter, Notice, utcnow
from workflow.seal import load_or_create_sealer
from workflow.webhooks import WebhookDelivery, verify_signature

pytestmark = [
    pytest.mark.skipif(
        server_database_url() is None,
        reason=f"the proof at scale runs where several processes share a database server: "
               f"PostgreSQL ({TEST_DATABASE_ENV}, `make test-postgres`); on SQLite files, "
               f"test_worker.py and test_two_servers.py cover workers and servers"),
    # About two minutes on an idle 2-core machine; a machine busy with other work is given
    # room before the deadlines fail it.
    pytest.mark.timeout(900),
]

LETTERS = 50
DEADLINE_SECONDS = 720
WEBHOOK_SECRET = "scale-proof-webhook-secret-0123456789"
# Quick heartbeats so that the killed worker's job is taken over within seconds.
QUEUE_SETTINGS = {
    "COUNTERPART_QUEUE_HEARTBEAT_SECONDS": "1",
    "COUNTERPART_QUEUE_DEAD_AFTER_SECONDS": "5",
    "COUNTERPART_QUEUE_POLL_MS": "200",
    "COUNTERPART_CONVERTER_PROCESSES": "1",
}
SUBJECT_KINDS = {"Please sign: ": "invitation", "Reminder: please sign ": "reminder",
                 "Fully executed: ": "completed"}


# --- the mail server, the workers --------------------------------------------------------------

class Inbox:
    """Every message the SMTP server accepted: (recipient, parsed message)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, email.message.EmailMessage]] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.lock:
            self.messages.extend((to, message) for to in envelope.rcpt_tos)
        return "250 OK"

    def of_kind(self, kind: str) -> list[tuple[str, str, email.message.EmailMessage]]:
        """(recipient, letter title, message) of each message of one kind."""
        with self.lock:
            found = list(self.messages)
        return [(to, title, message) for to, message in found
                for k, title in [_kind_and_title(message)] if k == kind]


def _kind_and_title(message: email.message.EmailMessage) -> tuple[str, str]:
    subject = str(message["Subject"])
    for prefix, kind in SUBJECT_KINDS.items():
        if subject.startswith(prefix):
            return kind, subject.removeprefix(prefix)
    return "other", subject


@pytest.fixture()
def inbox() -> Iterator[tuple[int, Inbox]]:
    from aiosmtpd.controller import Controller

    handler = Inbox()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller.port, handler
    controller.stop()


class Worker:
    """A ``counterpart worker`` process running ``threads`` jobs at once."""

    def __init__(self, data_dir: Path, env: dict[str, str], name: str, threads: int) -> None:
        self.log = data_dir / f"worker-{name}.log"
        self._handle = self.log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "web.cli", "worker", "--workers", str(threads)], cwd=ROOT,
            env=env, stdout=self._handle, stderr=subprocess.STDOUT)
        self.worker_id = ""

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_until_running(self, timeout: float = 90) -> Worker:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.output().splitlines():
                if "is running" in line:
                    self.worker_id = line.split("Counterpart worker ", 1)[1].split(" ", 1)[0]
                    return self
            if self.process.poll() is not None:
                raise AssertionError(f"the worker stopped: {self.output()}")
            time.sleep(0.1)
        raise AssertionError(f"the worker did not start: {self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(45)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._handle.close()


# --- waiting and reading -----------------------------------------------------------------------

_started = [time.monotonic()]


def progress(what: str, *, restart: bool = False) -> None:
    """Print how long the proof has run (shown with the output of a failed test)."""
    if restart:
        _started[0] = time.monotonic()
    print(f"{time.monotonic() - _started[0]:6.1f} s  {what}", flush=True)


def wait_for(check: Callable[[], Any], deadline: float, what: str,
             logs: Callable[[], str]) -> Any:
    """Poll ``check`` until it answers truthily; fail with the processes' logs at the deadline."""
    while time.monotonic() < deadline:
        answer = check()
        if answer:
            progress(what)
            return answer
        time.sleep(0.2)
    raise AssertionError(f"{what} did not happen in time:\n{logs()[-6000:]}")


def in_flight(worker_id: str) -> list[tuple[str, tuple]]:
    """The jobs a worker has in the queue's in-flight ledger: (job name, arguments)."""
    taken = []
    for entry in jobs.ledger().entries().values():
        if entry.worker == worker_id:
            message = jobs.huey.serializer.deserialize(entry.data)
            taken.append((message.name, tuple(message.args)))
    return taken


def queue_idle(database: Database) -> bool:
    """Nothing waits in the queue, runs, or is scheduled, and no notice, webhook delivery or
    letter PDF is on its way."""
    if jobs.huey.pending_count() or jobs.huey.scheduled_count() or jobs.ledger().entries():
        return False
    with database.transaction() as session:
        return not (
            session.scalar(select(func.count()).select_from(Notice).where(
                Notice.status.in_(("queued", "sending", "failed"))))
            or session.scalar(select(func.count()).select_from(WebhookDelivery).where(
                WebhookDelivery.status.in_(("pending", "delivering"))))
            or session.scalar(select(func.count()).select_from(Document).where(
                Document.status.in_(("pending", "generating")))))


def count_letters(database: Database, status: str) -> int:
    with database.transaction() as session:
        return session.scalar(select(func.count()).select_from(Letter).where(
            Letter.status == status))


def webhook_object(body: dict[str, Any]) -> tuple[str, int, str | None, int | None]:
    """What a webhook event is about: (type, letter id, envelope id, counterpart id)."""
    envelope = body.get("envelope") or {}
    counterpart = body.get("counterpart") or {}
    return (body["type"], body["letter"]["id"], envelope.get("envelope_id"),
            counterpart.get("counterpart_id"))


# --- the proof -----------------------------------------------------------------------------------

def test_fifty_letters_on_two_servers_and_two_workers_send_and_execute_everything_once(
        data_dir, database_url, shared_database, credentials, reference_terms, inbox):
    smtp_port, mail = inbox
    database = shared_database
    scale_jobs.create_runs_table(database)
    load_or_create_sealer(data_dir)  # made once here rather than raced for by four processes
    first_port, second_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("COUNTERPART_")}
    env.update(QUEUE_SETTINGS, COUNTERPART_DATA_DIR=str(data_dir),
               COUNTERPART_DATABASE_URL=database_url or "",
               COUNTERPART_SECRET_KEY=secrets.token_urlsafe(32),
               COUNTERPART_BASE_URL=f"http://127.0.0.1:{first_port}",
               COUNTERPART_SMTP_HOST="127.0.0.1", COUNTERPART_SMTP_PORT=str(smtp_port),
               COUNTERPART_SMTP_STARTTLS="false", COUNTERPART_SMTP_FROM="legal@capstone.test",
               COUNTERPART_WEBHOOK_ALLOW_PRIVATE="true",
               COUNTERPART_RATE_LIMIT_FAILURES="100000 per minute")
    server_env = {k: v for k, v in env.items() if k.startswith("COUNTERPART_")}
    worker_env = {**env, jobs.EXTRA_TASK_MODULES_ENV: "scale_jobs",
                  "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    # All the signers come from 127.0.0.1: lift the per-address share of connections.
    serve = ["--no-worker", "--connections-per-address", "0"]
    servers = [ServerProcess(data_dir, database_url, environment=server_env,
                             serve_options=serve, port=port)
               for port in (first_port, second_port)]
    # Worker "b" runs one job at a time: it is the one killed in the middle of an assembly.
    workers = [Worker(data_dir, worker_env, "a", 2), Worker(data_dir, worker_env, "b", 1)]
    survivor, doomed = workers

    def logs() -> str:
        parts = [f"--- {w.log.name}\n{w.output()[-2500:]}" for w in workers]
        parts += [f"--- {s.log.name}\n{s.log.read_text(errors='replace')[-1500:]}"
                  for s in servers]
        return "\n".join(parts)

    progress("starting two servers and two workers", restart=True)
    try:
        # This process enqueues the sweeps and reads the queue and its in-flight ledger.
        jobs.configure(jobs.queue_url_for({"DATA_DIR": data_dir, "DATABASE_URL": database_url}))
        with webhook_receiver() as receiver:
            for server in servers:
                server.wait_until_up(180)  # four processes start LibreOffice at once
            progress("servers up (the workers start meanwhile)")
            deadline = time.monotonic() + DEADLINE_SECONDS
            run_the_letters(database, servers, workers, credentials, reference_terms, mail,
                            receiver, deadline, logs)
            progress("checked")
    finally:
        for worker in workers:
            worker.stop()
        for server in servers:
            server.stop()
        jobs.use_immediate()
    assert survivor.process.returncode == 0, survivor.output()[-3000:]
    assert doomed.process.returncode == -signal.SIGKILL


def run_the_letters(database: Database, servers: list[ServerProcess], workers: list[Worker],
                    credentials: dict[str, tuple[str, str]], reference_terms: dict[str, Any],
                    mail: Inbox, receiver: Receiver, deadline: float,
                    logs: Callable[[], str]) -> None:
    survivor, doomed = workers
    urls = [server.url for server in servers]
    with database.transaction() as session:
        staff_token = create_api_token(session, credentials["staff"][0], "scale proof")
        admin_token = create_api_token(session, credentials["admin"][0], "scale proof")
    staff = {"Authorization": f"Bearer {staff_token}"}
    with httpx.Client(timeout=120) as client, ThreadPoolExecutor(max_workers=8) as pool:
        hook = client.post(f"{urls[0]}/api/webhooks",
                           headers={"Authorization": f"Bearer {admin_token}"},
                           json={"url": f"{receiver.url}/hooks", "events": ["*"],
                                 "secret": WEBHOOK_SECRET})
        assert hook.status_code == 201, hook.text

        # Fifty letters of one template, made through both servers; workers make their PDFs.
        def create(index: int) -> tuple[int, str]:
            terms = {**reference_terms, "company_name": f"Scale Company {index:02d}"}
            answer = client.post(f"{urls[index % 2]}/api/letters", headers=staff,
                                 json={"template": "separation_letter", "terms": terms})
            assert answer.status_code == 201, answer.text
            return answer.json()["id"], answer.json()["title"]

        letters = list(pool.map(create, range(LETTERS)))
        progress("fifty letters created")
        for worker in workers:
            worker.wait_until_running(120)
        titles = {letter_id: title for letter_id, title in letters}
        assert len(set(titles.values())) == LETTERS
        wait_for(lambda: count_letters(database, "generated") == LETTERS, deadline,
                 "the fifty letter PDFs", logs)

        # Each sent to its two signers, both with an email; reminders a day apart.
        def send(item: tuple[int, tuple[int, str]]) -> str:
            index, (letter_id, _) = item
            answer = client.post(f"{urls[index % 2]}/api/letters/{letter_id}/envelope",
                                 headers=staff, json={
                                     "signers": [
                                         {"role": "company", "name": f"Chair {index:02d}",
                                          "email": f"chair{index:02d}@company.test"},
                                         {"role": "executive", "name": f"Executive {index:02d}",
                                          "email": f"exec{index:02d}@home.test"}],
                                     "reminders": {"count": 2, "first_after_days": 1,
                                                   "every_days": 1}})
            assert answer.status_code == 201, answer.text
            return answer.json()["envelope_id"]

        envelope_ids = list(pool.map(send, enumerate(letters)))
        progress("fifty letters sent")
    signers = {f"{role}{index:02d}@{domain}": titles[letter_id]
               for index, (letter_id, _) in enumerate(letters)
               for role, domain in (("chair", "company.test"), ("exec", "home.test"))}
    wait_for(lambda: len(mail.of_kind("invitation")) >= 2 * LETTERS, deadline,
             "the hundred invitations", logs)

    # Every reminder due now; sweeps in both workers at once, and the periodic sweep itself
    # enqueued twice, as both workers' schedulers do at the start of its slot.
    with database.transaction() as session:
        session.execute(update(Counterpart).values(next_reminder_at=utcnow()))
    for _ in range(4):
        scale_jobs.sweep_together(2, 20.0)
    notices.sweep_notices()
    notices.sweep_notices()
    wait_for(lambda: len([r for r in scale_jobs.runs(database) if r[0] == "swept"]) == 4,
             deadline, "the four sweeps", logs)
    wait_for(lambda: len(mail.of_kind("reminder")) >= 2 * LETTERS, deadline,
             "the hundred reminders", logs)
    sweeps = scale_jobs.runs(database)
    assert {pid for stage, pid, _ in sweeps if stage == "swept"} == {survivor.pid, doomed.pid}
    assert sum(made for stage, _, made in sweeps if stage == "swept") == 2 * LETTERS

    # Each signer opens the link of their invitation and signs, all at the same moment,
    # alternating the two servers.
    links = {to: re.search(r"/sign/([A-Za-z0-9_-]{20,})", message.get_body(("plain",))
                           .get_content()).group(1)
             for to, _, message in mail.of_kind("invitation")}
    assert set(links) == set(signers)
    start = threading.Barrier(len(links))

    def sign(item: tuple[int, tuple[str, str]]) -> tuple[int, int]:
        index, (to, token) = item
        base = urls[index % 2]
        with httpx.Client(timeout=600) as signer:  # a hundred wait for two LibreOffices
            start.wait()
            opened = signer.get(f"{base}/api/sign/{token}")
            signed = signer.post(f"{base}/api/sign/{token}", json={
                "consent": True, "signature": {"type": "typed", "text": to.split("@")[0]},
                "time_zone": "UTC"})
            return opened.status_code, signed.status_code

    with ThreadPoolExecutor(max_workers=len(links)) as signing:
        answers = signing.map(sign, enumerate(sorted(links.items())))
        killed = kill_in_an_assembly(doomed, deadline, logs)
        progress(f"worker b killed in the assembly of envelope {killed[1][0]}")
        assert list(answers) == [(200, 200)] * len(links)
        progress("a hundred signatures answered")

    # The killed worker's assembly is taken over by the other; everything settles.
    wait_for(lambda: count_letters(database, "fully_executed") == LETTERS, deadline,
             "the fifty executed letters", logs)
    wait_for(lambda: len(mail.of_kind("completed")) >= 3 * LETTERS
             and len(receiver.requests) >= 7 * LETTERS and queue_idle(database),
             deadline, "an idle queue with every notice and webhook delivered", logs)
    time.sleep(1.0)  # a duplicate on its way would arrive now
    assert queue_idle(database)
    # No job failed along the way (a failure would be retried, but it is a bug here).
    for worker in workers:
        errors = [line for line in worker.output().splitlines() if " ERROR " in line]
        assert not errors, f"{worker.log.name}:\n" + "\n".join(errors[:20])
    check_the_takeover(database, killed, survivor)
    check_emails(database, mail, signers, titles, envelope_ids)
    check_webhooks(database, receiver, titles, envelope_ids)


def kill_in_an_assembly(doomed: Worker, deadline: float, logs: Callable[[], str]
                        ) -> tuple[str, tuple]:
    """SIGKILL the one-job worker while it assembles an executed letter; return that job.

    The worker is stopped (SIGSTOP) before its ledger is read, so what the ledger says is what
    it is doing when it dies; if it is between jobs or in another job, it goes on (SIGCONT)
    and the test looks again."""
    while time.monotonic() < deadline:
        if any(name.endswith("assemble_envelope_job") for name, _ in in_flight(doomed.worker_id)):
            os.kill(doomed.pid, signal.SIGSTOP)
            running = in_flight(doomed.worker_id)
            if len(running) == 1 and running[0][0].endswith("assemble_envelope_job"):
                os.kill(doomed.pid, signal.SIGKILL)
                doomed.process.wait(10)
                return running[0]
            os.kill(doomed.pid, signal.SIGCONT)
        time.sleep(0.02)
    raise AssertionError(f"worker b never ran an assembly:\n{logs()[-6000:]}")


def check_the_takeover(database: Database, killed: tuple[str, tuple], survivor: Worker) -> None:
    (envelope_id,) = killed[1]
    assert "is queued again" in survivor.output()
    with database.transaction() as session:
        envelope = session.get(Envelope, envelope_id)
        assert envelope.status == "completed" and envelope.executed_document_id is not None
        executed = Counter(session.scalars(select(Document.letter_id).where(
            Document.kind == "executed_pdf")))
        assert len(executed) == LETTERS and set(executed.values()) == {1}
        for envelope in session.scalars(select(Envelope)):
            assert envelope.status == "completed", envelope.id
            assert [c.status for c in envelope.counterparts] == ["signed", "signed"]
            assert [c.reminders_sent for c in envelope.counterparts] == [1, 1]
            assert verify_chain(session, envelope.letter_id).ok


def check_emails(database: Database, mail: Inbox, signers: dict[str, str],
                 titles: dict[int, str], envelope_ids: list[str]) -> None:
    """One invitation and one reminder to each signer, one completion to each signer and to
    the sender, each with the executed PDF; nothing else."""
    staff = "counsel@example.com"
    sent = Counter((kind, title, to) for to, message in mail.messages
                   for kind, title in [_kind_and_title(message)])
    expected = Counter({("invitation", title, to): 1 for to, title in signers.items()})
    expected.update({("reminder", title, to): 1 for to, title in signers.items()})
    expected.update({("completed", title, to): 1 for to, title in signers.items()})
    expected.update({("completed", title, staff): 1 for title in titles.values()})
    assert sent == expected, sent - expected or expected - sent
    with database.transaction() as session:
        executed = {titles[e.letter_id]: session.get(Document, e.executed_document_id)
                    .blob_sha256 for e in session.scalars(select(Envelope).where(
                        Envelope.id.in_(envelope_ids)))}
        statuses = Counter(session.scalars(select(Notice.status)))
    assert statuses == {"sent": 7 * LETTERS}
    for _, title, message in mail.of_kind("completed"):
        [attachment] = list(message.iter_attachments())
        assert hashlib.sha256(attachment.get_content()).hexdigest() == executed[title]


def check_webhooks(database: Database, receiver: Receiver, titles: dict[int, str],
                   envelope_ids: list[str]) -> None:
    """Each event once, signed, with one id: each letter created, sent, opened and signed by
    both signers, and executed."""
    requests = list(receiver.requests)
    for request in requests:
        assert verify_signature(WEBHOOK_SECRET, request.headers["Counterpart-Signature"],
                                request.body, now=request.at)
        assert request.headers["Counterpart-Event-Id"] == request.json()["id"]
    ids = Counter(request.json()["id"] for request in requests)
    assert set(ids.values()) == {1}, [i for i, n in ids.items() if n > 1]
    objects = Counter(webhook_object(request.json()) for request in requests)
    assert set(objects.values()) == {1}, [o for o, n in objects.items() if n > 1]
    assert Counter(kind for kind, *_ in objects) == {
        "letter.created": LETTERS, "envelope.sent": LETTERS, "counterpart.viewed": 2 * LETTERS,
        "counterpart.signed": 2 * LETTERS, "letter.executed": LETTERS}
    assert {letter for _, letter, *_ in objects} == set(titles)
    assert {envelope for _, _, envelope, _ in objects if envelope} == set(envelope_ids)
    with database.transaction() as session:
        assert Counter(session.scalars(select(WebhookDelivery.status))) == {
            "delivered": 7 * LETTERS}
