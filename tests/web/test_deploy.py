"""The production recipe in deploy/, run as shipped: Debian's nginx with
deploy/nginx/counterpart.conf in front of ``counterpart serve`` started as
deploy/systemd/counterpart.service starts it, with the settings of
deploy/systemd/counterpart.env. Only paths, ports and the host name are changed (to a private
folder, free loopback ports and ``localhost``), and every change is checked to have happened,
so a test cannot pass against a file other than the one shipped.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from serving import ServerProcess, free_port
from sqlalchemy import select
from support import create_server_database, drop_server_database, server_database_url

from web.config import MEGABYTE, config_from_env
from web.testing import csrf_token
from workflow.accounts import create_api_token
from workflow.db import open_database
from workflow.models import Counterpart, Event, User
from workflow.schema import load_template, sample_terms

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "deploy" / "nginx" / "counterpart.conf"
UNIT = ROOT / "deploy" / "systemd" / "counterpart.service"
ENV_FILE = ROOT / "deploy" / "systemd" / "counterpart.env"
DEBIAN_NGINX_CONF = Path("/etc/nginx/nginx.conf")
NGINX = Path("/usr/sbin/nginx")
SYSTEMD_ANALYZE = Path("/usr/bin/systemd-analyze")
STAFF_EMAIL = "counsel@example.com"
STAFF_PASSWORD = "correct horse battery"


def replaced(text: str, changes: dict[str, str], what: str) -> str:
    """Apply each change, failing if its text is not in the file."""
    for old, new in changes.items():
        assert old in text, f"{what} no longer holds {old!r}: update the test's rendering"
        text = text.replace(old, new)
    return text


def env_file(path: Path) -> dict[str, str]:
    """Read a systemd EnvironmentFile: NAME=value lines, # comments."""
    values = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def unit_values(path: Path, key: str) -> list[str]:
    """Every value of ``key`` in a systemd unit file."""
    return [line.split("=", 1)[1].strip() for line in path.read_text().splitlines()
            if line.startswith(f"{key}=")]


def serve_command() -> list[str]:
    """The unit's ExecStart, checked to run ``counterpart serve``, as arguments."""
    (command,) = unit_values(UNIT, "ExecStart")
    words = shlex.split(command)
    assert Path(words[0]).name == "counterpart" and words[1] == "serve", command
    return words[2:]


def option(words: list[str], name: str) -> str:
    return words[words.index(name) + 1]


# --- the files themselves ---------------------------------------------------------------------

def test_the_service_unit_is_valid_and_matches_the_proxy():
    assert SYSTEMD_ANALYZE.exists(), "systemd-analyze is missing: apt-get install systemd"
    venv_command = Path(sys.executable).with_name("counterpart")
    assert venv_command.exists(), "the counterpart command is not installed in the venv"
    unit = UNIT.read_text(encoding="utf-8")
    local = replaced(unit, {"/opt/counterpart/.venv/bin/counterpart": str(venv_command)},
                     UNIT.name)
    folder = Path(os.environ.get("TMPDIR", "/tmp"))
    copy = folder / f"counterpart-test-{os.getpid()}.service"
    copy.write_text(local, encoding="utf-8")
    try:
        checked = subprocess.run([str(SYSTEMD_ANALYZE), "verify", str(copy)],
                                 capture_output=True, text=True, timeout=60)
    finally:
        copy.unlink()
    assert checked.returncode == 0, checked.stderr
    assert copy.name not in checked.stderr, checked.stderr  # no unknown key or bad value
    (pre,) = unit_values(UNIT, "ExecStartPre")
    assert shlex.split(pre)[1:] == ["migrate"]
    assert unit_values(UNIT, "EnvironmentFile") == ["/etc/counterpart/counterpart.env"]

    # The app listens where nginx sends requests, and trusts that proxy and no other.
    words = serve_command()
    upstream = re.search(r"upstream counterpart_app \{\s*server ([\d.]+):(\d+);",
                         SITE.read_text())
    assert upstream is not None
    assert (option(words, "--host"), option(words, "--port")) == upstream.groups()
    settings = config_from_env(env_file(ENV_FILE))
    assert settings["PROXY_COUNT"] == 1 and settings["TRUSTED_PROXY"] == "127.0.0.1"
    assert settings["SESSION_COOKIE_SECURE"] is True
    # nginx refuses exactly what the app would refuse.
    body_limit = re.search(r"client_max_body_size (\d+)m;", SITE.read_text())
    assert body_limit is not None
    assert int(body_limit.group(1)) * MEGABYTE == settings["MAX_CONTENT_LENGTH"] \
        == config_from_env({})["MAX_CONTENT_LENGTH"]


# --- nginx in front of the app ----------------------------------------------------------------

def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for localhost and its key, made for this run."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(minutes=5))
                   .not_valid_after(now + dt.timedelta(days=1))
                   .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]),
                                  critical=False)
                   .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "localhost.pem", folder / "localhost.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


class Nginx:
    """Debian's nginx with its own nginx.conf and the shipped site, in a private folder."""

    def __init__(self, prefix: Path, app_port: int, cert: Path, key: Path) -> None:
        self.prefix = prefix
        self.https_port, self.http_port = free_port(), free_port()
        sites = prefix / "sites-enabled"
        sites.mkdir(parents=True)
        site = replaced(SITE.read_text(encoding="utf-8"), {
            "listen 443 ssl default_server;":
                f"listen 127.0.0.1:{self.https_port} ssl default_server;",
            "listen 443 ssl;": f"listen 127.0.0.1:{self.https_port} ssl;",
            "listen 80;": f"listen 127.0.0.1:{self.http_port};",
            # Loopback IPv4 only: the machine may have no IPv6.
            "listen [::]:443 ssl default_server;": "",
            "listen [::]:443 ssl;": "",
            "listen [::]:80;": "",
            "server_name counterpart.example.com;": "server_name localhost;",
            "/etc/ssl/certs/counterpart.example.com.pem": str(cert),
            "/etc/ssl/private/counterpart.example.com.key": str(key),
            "server 127.0.0.1:5000;": f"server 127.0.0.1:{app_port};",
            "/var/log/nginx/counterpart.access.log": str(prefix / "counterpart.access.log"),
            "/var/log/nginx/counterpart.error.log": str(prefix / "counterpart.error.log"),
        }, SITE.name)
        (sites / "counterpart").write_text(site, encoding="utf-8")
        temp_paths = "".join(f"\n\t{kind}_temp_path {prefix / kind};"
                             for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        main = replaced(DEBIAN_NGINX_CONF.read_text(encoding="utf-8"), {
            # As root, workers must reach this private folder; otherwise the line is ignored.
            "user www-data;": "user root;" if os.geteuid() == 0 else "",
            "pid /run/nginx.pid;": f"pid {prefix / 'nginx.pid'};",
            "error_log /var/log/nginx/error.log;": f"error_log {prefix / 'error.log'};",
            "access_log /var/log/nginx/access.log;": f"access_log {prefix / 'access.log'};",
            "include /etc/nginx/conf.d/*.conf;": "",
            "include /etc/nginx/sites-enabled/*;": f"include {sites}/*;",
            "http {": "http {" + temp_paths,
        }, str(DEBIAN_NGINX_CONF))
        self.conf = prefix / "nginx.conf"
        self.conf.write_text(main, encoding="utf-8")
        command = [str(NGINX), "-p", str(prefix), "-c", str(self.conf),
                   "-e", str(prefix / "error.log")]
        tested = subprocess.run([*command, "-t"], capture_output=True, text=True, timeout=60)
        assert tested.returncode == 0, tested.stderr
        self.process = subprocess.Popen([*command, "-g", "daemon off;"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def wait_until_up(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (self.prefix / "error.log").read_text()
            try:
                socket.create_connection(("127.0.0.1", self.https_port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("nginx did not listen: " + (self.prefix / "error.log").read_text())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # nginx's fast shutdown
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def _module_data_dir(folder: Path, seeded_database: Path) -> tuple[Path, str | None]:
    """A data folder with the seeded accounts (on the PostgreSQL test server when in use)."""
    data_dir = folder / "data"
    data_dir.mkdir()
    server = server_database_url()
    if server is None:
        shutil.copy(seeded_database, data_dir / "counterpart.db")
        return data_dir, None
    url = create_server_database(server)
    seed = open_database(seeded_database.parent, migrate=False)
    with seed.transaction() as session:
        accounts = [(u.email, u.password_hash, u.is_admin) for u in session.query(User)]
    seed.dispose()
    database = open_database(data_dir, url)
    with database.transaction() as session:
        session.add_all(User(email=e, password_hash=h, is_admin=a) for e, h, a in accounts)
    database.dispose()
    return data_dir, url


class Deployment:
    """The app as the unit starts it, nginx in front; clients from any loopback address."""

    def __init__(self, app: ServerProcess, nginx: Nginx, data_dir: Path,
                 database_url: str | None, cert: Path) -> None:
        self.app, self.nginx = app, nginx
        self.data_dir, self.database_url = data_dir, database_url
        self.url = f"https://localhost:{nginx.https_port}"
        self.tls = ssl.create_default_context(cafile=str(cert))

    def client(self, address: str = "127.0.0.1", **options: Any) -> httpx.Client:
        """An HTTPS client connecting from ``address`` through nginx."""
        transport = httpx.HTTPTransport(local_address=address, verify=self.tls)
        return httpx.Client(transport=transport, base_url=self.url, timeout=120, **options)

    def database(self) -> Any:
        return open_database(self.data_dir, self.database_url)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, seeded_database) -> Iterator[Deployment]:
    assert NGINX.exists(), "nginx is missing: apt-get install nginx (make test installs it)"
    folder = tmp_path_factory.mktemp("deploy")
    data_dir, database_url = _module_data_dir(folder, seeded_database)
    settings = env_file(ENV_FILE)
    settings["COUNTERPART_DATA_DIR"] = str(data_dir)
    settings["COUNTERPART_RATE_LIMIT_FAILURES"] = "10 per minute"  # the default, stated
    words = serve_command()
    port = free_port()
    words[words.index("--port") + 1] = str(port)
    app = ServerProcess(data_dir, database_url, environment=settings, serve_options=words,
                        port=port)
    cert, key = self_signed(folder)
    nginx = None
    try:
        app.wait_until_up()
        nginx = Nginx(folder / "nginx", port, cert, key)
        nginx.wait_until_up()
        yield Deployment(app, nginx, data_dir, database_url, cert)
    finally:
        if nginx is not None:
            nginx.stop()
        app.stop()
        server = server_database_url()
        if server and database_url:
            drop_server_database(server, database_url)


def sign_in(client: httpx.Client, email: str = STAFF_EMAIL,
            password: str = STAFF_PASSWORD) -> httpx.Response:
    form = client.get("/sign-in")
    assert form.status_code == 200, form.text
    # Over HTTPS, Flask-WTF also wants the Referer of a same-origin page, as browsers send.
    return client.post("/sign-in", headers={"Referer": str(form.url)},
                       data={"email": email, "password": password,
                             "csrf_token": csrf_token(form.text)})


def test_links_are_https_and_events_record_the_forwarded_client(deployment):
    database = deployment.database()
    with database.transaction() as session:
        token = create_api_token(session, STAFF_EMAIL, "deployment test")
    database.dispose()
    terms = sample_terms(load_template("separation_letter"))
    with deployment.client("127.0.0.5", headers={"Authorization": f"Bearer {token}"}) as staff:
        created = staff.post("/api/letters", json={"template": "separation_letter",
                                                   "terms": terms})
        assert created.status_code == 201, created.text
        letter_id = created.json()["id"]
        sent = staff.post(f"/api/letters/{letter_id}/envelope", json={})
        assert sent.status_code == 201, sent.text
    links = [s["link"] for s in sent.json()["signers"]]
    assert all(link.startswith(f"{deployment.url}/sign/") for link in links), links

    # The signer's client sends a forged X-Forwarded-For too: nginx replaces it.
    with deployment.client("127.0.0.7") as signer:
        token_part = links[0].rsplit("/", 1)[1]
        answer = signer.post(f"/api/sign/{token_part}",
                             headers={"X-Forwarded-For": "203.0.113.66"},
                             json={"consent": True, "signature": {"type": "typed",
                                                                  "text": "Eliot Protsch"}})
    assert answer.status_code == 200, answer.text
    assert answer.headers.get_list("Strict-Transport-Security") == [
        "max-age=31536000; includeSubDomains"]
    database = deployment.database()
    with database.transaction() as session:
        events = list(session.scalars(select(Event).where(Event.letter_id == letter_id)))
        signed = session.scalars(select(Counterpart).where(Counterpart.status == "signed"))
        assert [c.ip for c in signed] == ["127.0.0.7"]
    database.dispose()
    by_type = {e.type: e.ip for e in events}
    assert by_type["signed"] == by_type["consented"] == "127.0.0.7"
    assert {e.ip for e in events if e.actor == STAFF_EMAIL} == {"127.0.0.5"}
    assert "203.0.113.66" not in {e.ip for e in events}


def test_rate_limits_count_each_forwarded_client_apart(deployment):
    with deployment.client("127.0.0.21") as guesser:
        answers = [sign_in(guesser, "nobody@example.com", "a wrong guess").status_code
                   for _ in range(10)]
        assert answers == [401] * 10
        refused = guesser.get("/sign-in")
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    with deployment.client("127.0.0.22") as colleague:
        assert colleague.get("/sign-in").status_code == 200
        signed_in = sign_in(colleague)
        assert signed_in.status_code == 302, signed_in.text
        assert colleague.get("/letters").status_code == 200


def test_plain_http_is_sent_to_https(deployment):
    with httpx.Client(timeout=30) as client:
        answer = client.get(f"http://localhost:{deployment.nginx.http_port}/sign-in")
    assert answer.status_code == 301
    assert answer.headers["Location"] == "https://localhost/sign-in"


def test_an_unknown_host_is_refused_in_the_handshake(deployment):
    for server_name in ("other.example.com", None):
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with socket.create_connection(("127.0.0.1", deployment.nginx.https_port), 10) as raw:
            with pytest.raises(ssl.SSLError, match="UNRECOGNIZED_NAME|unrecognized name"):
                context.wrap_socket(raw, server_hostname=server_name)


def _raw_request(deployment: Deployment, address: str, head: bytes) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", deployment.nginx.https_port), 10,
                                   source_address=(address, 0))
    tls = deployment.tls.wrap_socket(raw, server_hostname="localhost")
    tls.sendall(head)
    return tls


def _status(sock: ssl.SSLSocket) -> int:
    line = sock.recv(4096).split(b"\r\n", 1)[0]
    return int(line.split()[1])


def test_an_upload_over_the_app_limit_is_refused_by_nginx(deployment):
    limit = config_from_env({})["MAX_CONTENT_LENGTH"]
    sock = _raw_request(deployment, "127.0.0.31", (
        f"POST /api/verify HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/pdf\r\n"
        f"Content-Length: {limit + 1}\r\n\r\n").encode())
    with sock:
        assert _status(sock) == 413
    # nginx logs a request after it has answered it: give the line a moment to arrive.
    access_log_file = deployment.nginx.prefix / "counterpart.access.log"
    deadline = time.monotonic() + 10
    while ('"POST /api/verify HTTP/1.1" 413' not in access_log_file.read_text()
           and time.monotonic() < deadline):
        time.sleep(0.05)
    assert '"POST /api/verify HTTP/1.1" 413' in access_log_file.read_text()


def test_one_address_cannot_hold_every_request(deployment):
    held: list[ssl.SSLSocket] = []
    slow_upload = (b"POST /api/verify HTTP/1.1\r\nHost: localhost\r\n"
                   b"Content-Type: application/pdf\r\nContent-Length: 100000\r\n\r\n%PDF-")
    try:
        with deployment.client("127.0.0.41") as greedy:
            assert greedy.get("/sign-in").status_code == 200
            held = [_raw_request(deployment, "127.0.0.41", slow_upload) for _ in range(20)]
            # Twenty uploads trickle in from one address: its next request is refused.
            deadline = time.monotonic() + 30
            status = greedy.get("/sign-in").status_code
            while status != 429 and time.monotonic() < deadline:
                status = greedy.get("/sign-in").status_code
            assert status == 429
        error_log = (deployment.nginx.prefix / "counterpart.error.log").read_text()
        assert 'limiting connections by zone "counterpart_connections"' in error_log
        with deployment.client("127.0.0.42") as other:
            assert other.get("/sign-in").status_code == 200
    finally:
        for sock in held:
            sock.close()


def test_forwarded_headers_from_anyone_but_the_proxy_are_ignored(deployment):
    app_url = deployment.app.url
    claims = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "forged.example"}
    # From the proxy's address the app believes them (nginx is the one that sends them) ...
    with httpx.Client(timeout=30) as proxy_address:
        trusted = proxy_address.get(f"{app_url}/sign-in", headers=claims)
    assert trusted.headers.get("Strict-Transport-Security") == "max-age=31536000"
    # ... from any other address, waitress drops them, and nothing else reads them.
    transport = httpx.HTTPTransport(local_address="127.0.0.51")
    with httpx.Client(transport=transport, timeout=30) as stranger:
        ignored = stranger.get(f"{app_url}/sign-in", headers=claims)
        assert "Strict-Transport-Security" not in ignored.headers
        # Each forged address would be a new client; the real one is counted instead.
        answers = [stranger.get(f"{app_url}/api/letters", headers={
            "Authorization": "Bearer a-guessed-token", "X-Forwarded-For": f"198.51.100.{n}"})
            .status_code for n in range(11)]
    assert answers == [401] * 10 + [429]
