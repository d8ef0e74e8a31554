"""With Redis, every app server counts a client's failures together."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest
import redis
from serving import free_port

from web import create_app

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
