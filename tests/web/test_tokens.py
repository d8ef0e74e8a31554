"""API tokens have a lifetime, can be listed without being shown, and can be revoked; an
expired or revoked token gets the same 401 as an unknown one and changes nothing."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select, update

from web.cli import cli
from web.database import get_db
from workflow.models import ApiToken, utcnow

EMAIL = "counsel@example.com"


@pytest.fixture()
def run(data_dir: Path, database_url: str | None):
    """Run ``counterpart`` on the test's data folder: ``run("list-tokens", EMAIL)``."""
    env = {"COUNTERPART_DATA_DIR": str(data_dir)}
    if database_url:
        env["COUNTERPART_DATABASE_URL"] = database_url

    def invoke(*args: str):
        return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    return invoke


def tokens(app) -> list[tuple[str, dt.datetime, dt.datetime | None, dt.datetime | None]]:
    with app.app_context(), get_db().transaction() as session:
        return [(t.label, t.expires_at, t.last_used_at, t.revoked_at)
                for t in session.scalars(select(ApiToken).order_by(ApiToken.id))]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_tokens_expire_after_their_days(app, run):
    default = run("create-token", EMAIL, "--label", "scripts")
    short = run("create-token", EMAIL, "--label", "ci", "--days", "7")
    assert default.exit_code == short.exit_code == 0
    (_, ninety, _, _), (_, seven, _, _) = tokens(app)
    now = utcnow()
    assert abs(ninety - (now + dt.timedelta(days=90))) < dt.timedelta(minutes=1)
    assert abs(seven - (now + dt.timedelta(days=7))) < dt.timedelta(minutes=1)


@pytest.mark.parametrize("days", ["0", "-3", "3651", "²", "9" * 5000])
def test_a_lifetime_out_of_range_makes_no_token(app, run, days):
    result = run("create-token", EMAIL, "--days", days)
    assert result.exit_code == 2 and "--days" in result.output
    assert tokens(app) == []


def test_an_expired_token_is_refused_like_an_unknown_one(app, client, run):
    token = run("create-token", EMAIL, "--days", "1").output.strip()
    assert client.get("/api/letters", headers=bearer(token)).status_code == 200
    with app.app_context(), get_db().transaction() as session:  # a day and a second later
        session.execute(update(ApiToken).values(
            expires_at=utcnow() - dt.timedelta(seconds=1)))
    before = tokens(app)
    expired = client.get("/api/letters", headers=bearer(token))
    unknown = client.get("/api/letters", headers=bearer("cpt_" + "x" * 43))
    assert expired.status_code == unknown.status_code == 401
    assert expired.json == unknown.json
    assert expired.headers["WWW-Authenticate"] == unknown.headers["WWW-Authenticate"]
    assert tokens(app) == before  # not even "last used" moved
    assert "expired" in run("list-tokens", EMAIL).output


def test_list_tokens_shows_everything_but_the_tokens(app, client, run):
    ci = run("create-token", EMAIL, "--label", "ci", "--days", "30").output.strip()
    run("create-token", EMAIL, "--label", "laptop")
    client.get("/api/letters", headers=bearer(ci))
    # The use is noted in memory by the GET and written in the next batch.
    with app.app_context():
        assert get_db().activity.flush(get_db()) == 1
    listed = run("list-tokens", EMAIL)
    assert listed.exit_code == 0
    lines = listed.output.splitlines()
    assert lines[0].split() == ["label", "created", "last", "used", "expires", "state"]
    ci_line, laptop_line = lines[1], lines[2]
    today = utcnow().strftime("%Y-%m-%d")
    in_30_days = (utcnow() + dt.timedelta(days=30)).strftime("%Y-%m-%d")
    assert ci_line.startswith("ci ") and ci_line.count(today) == 2  # created and used today
    assert in_30_days in ci_line and ci_line.endswith("active")
    assert laptop_line.startswith("laptop ") and " never " in laptop_line
    assert "cpt_" not in listed.output and ci[4:] not in listed.output
    assert run("list-tokens", "nobody@example.com").exit_code == 2


def test_revoking_by_label_stops_that_token_at_once(app, client, run):
    ci = run("create-token", EMAIL, "--label", "ci").output.strip()
    laptop = run("create-token", EMAIL, "--label", "laptop").output.strip()
    result = run("revoke-token", EMAIL, "--label", "ci")
    assert result.exit_code == 0 and "1 API token was revoked" in result.output
    assert client.get("/api/letters", headers=bearer(ci)).status_code == 401
    assert client.get("/api/letters", headers=bearer(laptop)).status_code == 200
    listed = run("list-tokens", EMAIL).output
    assert "revoked " + utcnow().strftime("%Y-%m-%d") in listed

    before = tokens(app)
    again = run("revoke-token", EMAIL, "--label", "ci")
    assert again.exit_code == 2 and "no unrevoked API token labelled 'ci'" in again.output
    assert tokens(app) == before


def test_revoking_all_tokens(app, client, run):
    made = [run("create-token", EMAIL, "--label", label).output.strip()
            for label in ("a", "b", "c")]
    result = run("revoke-token", EMAIL, "--all")
    assert result.exit_code == 0 and "3 API tokens were revoked" in result.output
    assert [client.get("/api/letters", headers=bearer(t)).status_code for t in made] == \
        [401] * 3


@pytest.mark.parametrize("args", [[], ["--label", "ci", "--all"]])
def test_revoke_token_needs_a_label_or_all(app, run, args):
    run("create-token", EMAIL, "--label", "ci")
    before = tokens(app)
    result = run("revoke-token", EMAIL, *args)
    assert result.exit_code == 2 and "Give either --label LABEL or --all." in result.output
    assert tokens(app) == before
