"""The ``counterpart`` command's web commands: accounts, tokens, migrations and ``serve``."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import inspect

from web.cli import cli
from workflow.accounts import authenticate, user_for_token
from workflow.db import open_database


@pytest.fixture()
def env(tmp_path: Path, database_url: str | None) -> dict[str, str]:
    values = {"COUNTERPART_DATA_DIR": str(tmp_path / "data")}
    if database_url:
        values["COUNTERPART_DATABASE_URL"] = database_url
    return values


def run(env: dict[str, str], *args: str, input: str | None = None):
    return CliRunner().invoke(cli, list(args), env=env, input=input, catch_exceptions=False)


def _database(env):
    return open_database(Path(env["COUNTERPART_DATA_DIR"]), env.get("COUNTERPART_DATABASE_URL"))


def test_letter_commands_are_still_there():
    assert {"render", "schema", "sample-terms", "batch", "templates", "serve", "create-user",
            "create-token", "create-first-admin", "migrate"} <= set(cli.commands)
    result = CliRunner().invoke(cli, ["templates"])
    assert result.exit_code == 0 and "separation_letter" in result.output


def test_migrate_creates_the_database(env):
    result = run(env, "migrate")
    assert result.exit_code == 0
    assert "The database is up to date" in result.output
    if "COUNTERPART_DATABASE_URL" not in env:
        assert (Path(env["COUNTERPART_DATA_DIR"]) / "counterpart.db").is_file()
    database = open_database(Path(env["COUNTERPART_DATA_DIR"]),
                             env.get("COUNTERPART_DATABASE_URL"), migrate=False)
    assert "letters" in inspect(database.engine).get_table_names()
    database.dispose()


def test_create_user_with_a_generated_password(env):
    result = run(env, "create-user", "Lawyer@Example.com", "--admin", "--generate")
    assert result.exit_code == 0, result.output
    assert "Created the administrator account lawyer@example.com." in result.output
    password = re.search(r"\(shown once\): (\S+)", result.output).group(1)
    database = _database(env)
    with database.transaction() as session:
        user = authenticate(session, "lawyer@example.com", password)
        assert user is not None and user.is_admin
    database.dispose()


def test_create_user_asks_for_the_password_twice(env):
    result = run(env, "create-user", "clerk@example.com",
                 input="a long password\na long password\n")
    assert result.exit_code == 0, result.output
    assert "a long password" not in result.output.split("Created")[1]
    database = _database(env)
    with database.transaction() as session:
        assert authenticate(session, "clerk@example.com", "a long password") is not None
    database.dispose()


@pytest.mark.parametrize("email, password, message", [
    ("not-an-email", "a long password", "is not an email address"),
    ("clerk@example.com", "short", "at least 10 characters"),
])
def test_create_user_refuses_bad_input(env, email, password, message):
    result = run(env, "create-user", email, input=f"{password}\n{password}\n")
    assert result.exit_code == 2
    assert message in result.output


def test_create_user_refuses_a_second_account_for_the_same_email(env):
    run(env, "create-user", "clerk@example.com", "--generate")
    result = run(env, "create-user", "clerk@example.com", "--generate")
    assert result.exit_code == 2
    assert "There is already an account for clerk@example.com." in result.output


def test_first_admin_is_created_once_and_its_password_printed_once(env):
    first = run(env, "create-first-admin")
    assert first.exit_code == 0
    assert "email:    admin@example.com" in first.output
    password = re.search(r"password: (\S+)", first.output).group(1)
    second = run(env, "create-first-admin")
    assert second.exit_code == 0 and second.output == ""
    database = _database(env)
    with database.transaction() as session:
        assert authenticate(session, "admin@example.com", password).is_admin
    database.dispose()


def test_first_admin_email_from_the_environment(env):
    result = run({**env, "COUNTERPART_ADMIN_EMAIL": "boss@firm.example"}, "create-first-admin")
    assert "email:    boss@firm.example" in result.output


def test_set_password(env):
    run(env, "create-user", "clerk@example.com", "--generate")
    result = run(env, "set-password", "clerk@example.com",
                 input="another password\nanother password\n")
    assert result.exit_code == 0
    database = _database(env)
    with database.transaction() as session:
        assert authenticate(session, "clerk@example.com", "another password") is not None
    database.dispose()


def test_create_token_prints_a_working_token(env):
    run(env, "create-user", "robot@example.com", "--generate")
    result = run(env, "create-token", "robot@example.com", "--label", "ci")
    assert result.exit_code == 0
    token = result.output.strip()
    assert token.startswith("cpt_")
    database = _database(env)
    with database.transaction() as session:
        assert user_for_token(session, token).email == "robot@example.com"
    database.dispose()


def test_create_token_for_an_unknown_account(env):
    result = run(env, "create-token", "nobody@example.com")
    assert result.exit_code == 2
    assert ("There is no account for nobody@example.com; create it first with "
            "`counterpart create-user nobody@example.com`.") in result.output


def test_serve_runs_waitress_and_stops_cleanly(tmp_path):
    env = {**os.environ, "COUNTERPART_DATA_DIR": str(tmp_path / "data")}
    command = [sys.executable, "-c", "from web.cli import main; main()",
               "serve", "--port", "0", "--threads", "2"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        line = process.stdout.readline()
        match = re.search(r"running at (http://127\.0\.0\.1:\d+/)", line)
        assert match, line + process.stderr.read()
        with urllib.request.urlopen(match.group(1) + "sign-in", timeout=30) as response:
            assert response.status == 200
            assert b"Sign in" in response.read()
            assert response.headers["Content-Security-Policy"]
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(match.group(1) + "api/letters", timeout=30)
        assert refused.value.code == 401
        refused.value.close()
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "Stopping Counterpart" in out


def test_the_readme_api_example_makes_a_token_on_a_fresh_install(tmp_path, database_url):
    """Run the README's first API lines as written, after what `make run` does on a new folder."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    block = readme.split("## The JSON API", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    lines = []
    for line in block.splitlines():
        lines.append(line)
        if line.startswith("TOKEN="):
            break
    assert any("create-token" in line for line in lines)
    program = str(Path(sys.executable).with_name("counterpart"))
    script = "\n".join(["set -euo pipefail", "counterpart create-first-admin >/dev/null",
                        *lines, 'printf "%s" "$TOKEN"']).replace(".venv/bin/counterpart",
                                                                  "counterpart")
    env = {**os.environ, "COUNTERPART_DATA_DIR": str(tmp_path / "data"),
           "PATH": f"{Path(program).parent}:{os.environ['PATH']}"}
    if database_url:
        env["COUNTERPART_DATABASE_URL"] = database_url
    done = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip().splitlines()[-1]
    database = open_database(tmp_path / "data", database_url)
    with database.transaction() as session:
        user = user_for_token(session, token)
        assert user is not None and user.email == "clerk@example.com"
    database.dispose()

