"""With Redis, every app server counts a client's failures together; without it, the web
processes of one ``counterpart serve`` count them together in a file they share."""

from __future__ import annotations

import multiprocessing
import shutil
import subprocess
import time

import httpx
import pytest
import redis
from limits import parse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter
from serving import ServerProcess, free_port

from web import create_app
from web.ratelimit import SHARED_FILE_SCHEME, SharedFileStorage

GUESSER = {"REMOTE_ADDR": "203.0.113.99"}


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    server = shutil.which("redis-server")
    assert server, "redis-server is missing: make test installs Debian's redis-server"
    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1",
                                "--save", "", "--appendonly", "no", "--dir", str(folder)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                process.kill()
                pytest.fail("redis-server did not start")
            time.sleep(0.05)
    yield url
    process.terminate()
    process.wait(10)


def test_failures_on_one_server_count_on_the_other(app_config, redis_url, api):
    config = {**app_config, "RATE_LIMIT_FAILURES": "4 per minute", "REDIS_URL": redis_url}
    first, second = create_app(config), create_app(config)
    try:
        for index in range(2):
            for server in (first, second):
                response = server.test_client().get(
                    "/api/letters", headers={"Authorization": f"Bearer wrong{index}"},
                    environ_base=GUESSER)
                assert response.status_code == 401
        # Four failures, two on each server: both now turn the guesser away.
        for server in (first, second):
            assert server.test_client().get("/api/letters", headers=api,
                                            environ_base=GUESSER).status_code == 429
        assert second.test_client().get("/api/letters", headers=api).status_code == 200
    finally:
        for server in (first, second):
            server.extensions["counterpart.documents"].close()
            server.extensions["counterpart.db"].dispose()


def _guess(url: str, limit: str, attempts: int, queue: multiprocessing.Queue) -> None:
    """In another process: count ``attempts`` failures in the shared file; report the answers."""
    limiter = MovingWindowRateLimiter(storage_from_string(url))
    queue.put([limiter.hit(parse(limit), "sign-in", "203.0.113.99") for _ in range(attempts)])


def test_processes_sharing_the_file_never_count_past_a_limit(tmp_path):
    url = f"{SHARED_FILE_SCHEME}://{tmp_path / 'limits.sqlite3'}"
    storage = storage_from_string(url)
    assert isinstance(storage, SharedFileStorage)
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    guessers = [context.Process(target=_guess, args=(url, "25 per minute", 20, queue))
                for _ in range(3)]
    for guesser in guessers:
        guesser.start()
    answers = [queue.get(timeout=60) for _ in guessers]
    for guesser in guessers:
        guesser.join(30)
    # 60 attempts from three processes at once: exactly 25 counted, the rest turned away.
    assert sum(sum(a) for a in answers) == 25
    limiter = MovingWindowRateLimiter(storage)
    assert not limiter.test(parse("25 per minute"), "sign-in", "203.0.113.99")
    assert limiter.test(parse("25 per minute"), "sign-in", "198.51.100.1")
    reset, remaining = limiter.get_window_stats(parse("25 per minute"), "sign-in",
                                                "203.0.113.99")
    assert remaining == 0 and time.time() < reset <= time.time() + 60


def test_a_server_of_two_processes_keeps_the_limit_without_redis(data_dir, database_url):
    server = ServerProcess(data_dir, database_url, serve_options=["--processes", "2"],
                           environment={"COUNTERPART_RATE_LIMIT_FAILURES": "3 per minute"})
    answers = []
    with server:
        assert len(server.web_processes()) == 2
        for index in range(10):
            # A new connection each time, so that either process may answer.
            with httpx.Client(timeout=15) as client:
                answers.append(client.get(f"{server.url}/api/letters", headers={
                    "Authorization": f"Bearer wrong{index}"}).status_code)
    # Three failures in all, not three per process.
    assert answers == [401, 401, 401] + [429] * 7
