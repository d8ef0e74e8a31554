"""The JSON API: every route, its answers, and every way a request can be wrong."""

from __future__ import annotations

import io

import jsonschema
import pypdf
import pytest
from sqlalchemy import func, select, update
from support import docx_text, letter_words

from web.database import get_db
from workflow.models import ApiToken, Letter, utcnow
from workflow.states import LetterStatus


def pdf_text(data: bytes) -> str:
    reader = pypdf.PdfReader(io.BytesIO(data))
    return "\n".join(page.extract_text() for page in reader.pages)


def _letters(app) -> int:
    with app.app_context(), get_db().transaction() as session:
        return session.scalar(select(func.count()).select_from(Letter))


@pytest.fixture()
def created(client, api, reference_terms) -> dict:
    response = client.post("/api/letters", headers=api,
                           json={"template": "separation_letter", "terms": reference_terms})
    assert response.status_code == 201, response.json
    return response.json


# --- templates ---------------------------------------------------------------------------------

def test_templates(client, api):
    response = client.get("/api/templates", headers=api)
    assert response.status_code == 200
    template = next(t for t in response.json["templates"] if t["name"] == "separation_letter")
    assert template["status"] == "published" and template["published_version"] == 1
    assert template["title"] == "Executive separation and consulting letter"
    assert template["signers"] == ["company", "executive"]
    assert template["schema"] == "http://localhost/api/templates/separation_letter/schema"


def test_template_schema_validates_the_reference_terms(client, api, reference_terms):
    response = client.get("/api/templates/separation_letter/schema", headers=api)
    assert response.status_code == 200
    schema = response.json
    assert schema["$schema"].endswith("2020-12/schema")
    assert list(schema["properties"])[:3] == ["letter_date", "company_name", "company_short_name"]
    jsonschema.Draft202012Validator(schema).validate(reference_terms)


@pytest.mark.parametrize("name", ["nope", "Separation_Letter", "..", "separation_letter.toml"])
def test_unknown_template_schema_is_404_json(client, api, name):
    response = client.get(f"/api/templates/{name}/schema", headers=api)
    assert response.status_code == 404
    assert "There is no template named" in response.json["error"]
    assert "/" not in response.json["error"]  # no server folder in the message


def test_template_name_cannot_walk_folders(client, api):
    response = client.get("/api/templates/..%2F..%2Fetc%2Fpasswd/schema", headers=api)
    assert response.status_code == 404
    assert response.is_json


# --- creating letters --------------------------------------------------------------------------

def test_create_answers_201_with_the_letter(created, reference_terms):
    assert isinstance(created["id"], int)
    # Its PDF's job ran once the letter was saved (the test queue is immediate).
    assert created["status"] == "generated"
    assert created["title"] == "Separation letter of John R. Tucker, Capstone Turbine Corporation"
    assert created["columns"] == [
        {"term": "executive_full_name", "label": "Executive's full name",
         "value": "John R. Tucker"},
        {"term": "company_name", "label": "Company name",
         "value": "Capstone Turbine Corporation"}]
    assert created["template_version"] == 1
    assert created["current_version"] == 1
    assert created["terms"] == reference_terms
    assert created["url"] == f"http://localhost/api/letters/{created['id']}"
    (version,) = created["versions"]
    kinds = {d["kind"]: d for d in version["documents"]}
    assert kinds["letter_docx"]["status"] == "ready"
    assert len(kinds["letter_docx"]["sha256"]) == 64
    assert kinds["letter_pdf"]["status"] in ("pending", "generating", "ready")
    assert kinds["letter_pdf"]["download"] == \
        f"http://localhost/api/letters/{created['id']}/document.pdf?version=1"


def test_create_sets_the_location_header(client, api, reference_terms):
    response = client.post("/api/letters", headers=api,
                           json={"template": "separation_letter", "terms": reference_terms})
    assert response.headers["Location"] == response.json["url"]


def test_create_records_who_and_from_where(app, client, api, reference_terms):
    client.post("/api/letters", headers={**api, "User-Agent": "curl/8.0"},
                json={"template": "separation_letter", "terms": reference_terms})
    from workflow.audit import events_of

    with app.app_context(), get_db().transaction() as session:
        (event,) = (e for e in events_of(session, 1) if e.type == "created")
        assert (event.type, event.actor, event.user_agent) == \
            ("created", "counsel@example.com", "curl/8.0")
        assert event.ip == "127.0.0.1"


def test_create_generates_the_pdf_at_once_in_the_background(app_config, reference_terms):
    import time

    from web import create_app
    from workflow.accounts import create_api_token

    app = create_app(app_config)
    try:
        with app.app_context(), get_db().transaction() as session:
            headers = {"Authorization": "Bearer " + create_api_token(session,
                                                                     "counsel@example.com")}
        client = app.test_client()
        letter_id = client.post("/api/letters", headers=headers, json={
            "template": "separation_letter", "terms": reference_terms}).json["id"]
        deadline = time.monotonic() + 60
        while client.get(f"/api/letters/{letter_id}", headers=headers).json["status"] != \
                "generated":
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        app.extensions["counterpart.documents"].close()
        app.extensions["counterpart.db"].dispose()


def test_create_accepts_a_body_without_content_type(client, api, reference_terms):
    import json

    response = client.post("/api/letters", headers=api, data=json.dumps(
        {"template": "separation_letter", "terms": reference_terms}))
    assert response.status_code == 201


def test_hourly_rate_as_a_json_number(client, api, reference_terms):
    response = client.post("/api/letters", headers=api, json={
        "template": "separation_letter", "terms": {**reference_terms, "hourly_rate": 1250.5}})
    assert response.status_code == 201
    assert response.json["terms"]["hourly_rate"] == "1250.50"


def test_each_invalid_term_is_422_naming_the_field(app, client, api, reference_terms,
                                                   bad_value):
    key, value, message = bad_value
    terms = {**reference_terms, key: value}
    if value == "" and isinstance(reference_terms[key], bool):
        del terms[key]
    response = client.post("/api/letters", headers=api,
                           json={"template": "separation_letter", "terms": terms})
    assert response.status_code == 422
    assert list(response.json["errors"]) == [key]
    assert response.json["errors"][key] == message
    assert response.json["error"] == "The terms are not valid: 1 field has an error."
    assert _letters(app) == 0


def test_json_types_are_checked(client, api, reference_terms):
    terms = {**reference_terms, "consulting_months": "12", "option_shares": True,
             "repurchase_unvested_restricted": "yes", "letter_date": 20060724,
             "cancelled_option_grant_dates": "2006-06-12;2006-06-22", "chair_name": 7}
    response = client.post("/api/letters", headers=api,
                           json={"template": "separation_letter", "terms": terms})
    assert response.status_code == 422
    assert response.json["errors"] == {
        "option_shares": "must be a whole number",
        "letter_date": "must be a date written YYYY-MM-DD",
        "chair_name": "must be text",
    }


def test_unknown_terms_are_named(client, api, reference_terms):
    response = client.post("/api/letters", headers=api, json={
        "template": "separation_letter", "terms": {**reference_terms, "bonus": 5}})
    assert response.status_code == 422
    assert response.json["errors"] == {"bonus": "is not a term of the separation_letter template"}


@pytest.mark.parametrize("body, errors", [
    ({"terms": {}}, {"template"}),
    ({"template": "", "terms": {}}, {"template"}),
    ({"template": 5, "terms": {}}, {"template"}),
    ({"template": "no_such", "terms": {}}, {"template"}),
    ({"template": "separation_letter"}, {"terms"}),
    ({"template": "separation_letter", "terms": [1, 2]}, {"terms"}),
    ({"template": "separation_letter", "terms": "x"}, {"terms"}),
])
def test_missing_or_wrong_template_and_terms_are_422(app, client, api, body, errors):
    response = client.post("/api/letters", headers=api, json=body)
    assert response.status_code == 422
    assert set(response.json["errors"]) == errors
    assert _letters(app) == 0


def test_empty_terms_name_every_required_field(client, api, spec):
    response = client.post("/api/letters", headers=api,
                           json={"template": "separation_letter", "terms": {}})
    assert response.status_code == 422
    assert set(response.json["errors"]) == {k for k, f in spec.fields.items() if f.required}


@pytest.mark.parametrize("data, message", [
    (b"", "The request body is empty"),
    (b"{not json", "The request body is not valid JSON"),
    (b'{"template": "separation_letter",', "The request body is not valid JSON"),
    (b"[1, 2, 3]", "must be a JSON object"),
    (b'"text"', "must be a JSON object"),
    (b"\xff\xfe\x00garbage", "not UTF-8"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
])
def test_malformed_bodies_are_400_with_a_message(app, client, api, data, message):
    response = client.post("/api/letters", headers={**api, "Content-Type": "application/json"},
                           data=data)
    assert response.status_code == 400
    assert message in response.json["error"]
    assert _letters(app) == 0


def test_too_large_body_is_413_json(app, client, api, reference_terms):
    app.config["MAX_CONTENT_LENGTH"] = 10_000
    response = client.post("/api/letters", headers=api, json={
        "template": "separation_letter",
        "terms": {**reference_terms, "chair_name": "x" * 20_000}})
    assert response.status_code == 413
    assert response.json["error"].startswith("The request is too large.")
    assert _letters(app) == 0


def test_wrong_method_is_405_json(client, api):
    response = client.delete("/api/letters", headers=api)
    assert response.status_code == 405
    assert response.is_json
    assert "GET" in response.headers["Allow"]


def test_unknown_api_address_is_404_json(client, api):
    response = client.get("/api/nothing-here", headers=api)
    assert response.status_code == 404
    assert response.is_json


# --- reading letters ---------------------------------------------------------------------------

def test_get_letter(client, api, created, reference_terms):
    response = client.get(f"/api/letters/{created['id']}", headers=api)
    assert response.status_code == 200
    assert response.json["terms"] == reference_terms
    assert response.json["page"] == f"http://localhost/letters/{created['id']}"
    assert response.json["created_by"] == "counsel@example.com"


def test_get_unknown_letter_is_404_json(client, api):
    response = client.get("/api/letters/12345", headers=api)
    assert response.status_code == 404
    assert response.json == {"error": "There is no letter 12345."}


def test_list_with_filters(app, client, api, reference_terms):
    for name in ("Ann Able", "Bea Baker", "Cal Cole"):
        client.post("/api/letters", headers=api, json={
            "template": "separation_letter",
            "terms": {**reference_terms, "executive_full_name": name}})
    with app.app_context(), get_db().transaction() as session:
        session.execute(update(Letter).where(Letter.title.like("%Bea Baker%"))
                        .values(status=LetterStatus.DRAFT.value))

    def executives(answer: dict) -> list[str]:
        return [x["columns"][0]["value"] for x in answer["letters"]]

    every = client.get("/api/letters", headers=api).json
    assert executives(every) == ["Cal Cole", "Bea Baker", "Ann Able"]
    assert (every["total"], every["page"], every["pages"]) == (3, 1, 1)
    assert executives(client.get("/api/letters?q=baker", headers=api).json) == ["Bea Baker"]
    assert executives(client.get("/api/letters?status=generated", headers=api).json) == \
        ["Cal Cole", "Ann Able"]
    paged = client.get("/api/letters?per_page=2&page=2", headers=api).json
    assert executives(paged) == ["Ann Able"]
    assert paged["pages"] == 2


@pytest.mark.parametrize("query", ["status=lost", "page=0", "page=x", "per_page=1000"])
def test_list_with_bad_parameters_is_400(client, api, query):
    response = client.get(f"/api/letters?{query}", headers=api)
    assert response.status_code == 400
    assert response.json["error"]


# --- documents ---------------------------------------------------------------------------------

def test_pdf_download_waits_for_generation_and_is_the_letter(client, api, created,
                                                             reference_words):
    response = client.get(f"/api/letters/{created['id']}/document.pdf", headers=api)
    assert response.status_code == 200
    assert response.mimetype == "application/pdf"
    assert response.headers["Content-Disposition"] == \
        "attachment; filename=john-r-tucker-separation-letter-v1.pdf"
    assert letter_words(pdf_text(response.data)) == reference_words
    letter = client.get(f"/api/letters/{created['id']}", headers=api).json
    assert letter["status"] == "generated"
    pdf = next(d for d in letter["versions"][0]["documents"] if d["kind"] == "letter_pdf")
    assert pdf["status"] == "ready" and pdf["size"] == len(response.data)


def test_docx_download(client, api, created, reference_words):
    response = client.get(f"/api/letters/{created['id']}/document.docx", headers=api)
    assert response.status_code == 200
    assert response.headers["Content-Disposition"].endswith(".docx")
    assert letter_words(docx_text(response.data)) == reference_words


@pytest.mark.parametrize("query, status", [("?version=2", 404), ("?version=x", 400),
                                           ("?version=-1", 400)])
def test_download_of_a_bad_version(client, api, created, query, status):
    response = client.get(f"/api/letters/{created['id']}/document.pdf{query}", headers=api)
    assert response.status_code == status
    assert response.is_json


def test_download_of_an_unknown_letter_is_404(client, api):
    assert client.get("/api/letters/77/document.pdf", headers=api).status_code == 404
    assert client.get("/api/letters/77/document.txt", headers=api).status_code == 404


# --- replacing the terms -----------------------------------------------------------------------

def test_put_terms_makes_a_new_version_and_keeps_the_old(client, api, created,
                                                         reference_terms, reference_words):
    letter_id = created["id"]
    response = client.put(f"/api/letters/{letter_id}/terms", headers=api,
                          json={"terms": {**reference_terms, "hourly_rate": "725"}})
    assert response.status_code == 200
    assert response.json["current_version"] == 2
    assert response.json["terms"]["hourly_rate"] == "725"
    assert [v["number"] for v in response.json["versions"]] == [2, 1]
    v2 = client.get(f"/api/letters/{letter_id}/document.pdf", headers=api)
    assert v2.headers["Content-Disposition"].endswith("-v2.pdf")
    assert "$725 per hour" in " ".join(pdf_text(v2.data).split())
    v1 = client.get(f"/api/letters/{letter_id}/document.pdf?version=1", headers=api)
    assert letter_words(pdf_text(v1.data)) == reference_words


def test_put_unchanged_terms_keeps_the_version(client, api, created, reference_terms):
    response = client.put(f"/api/letters/{created['id']}/terms", headers=api,
                          json={"terms": reference_terms})
    assert response.status_code == 200
    assert response.json["current_version"] == 1


def test_put_invalid_terms_is_422(client, api, created, reference_terms):
    response = client.put(f"/api/letters/{created['id']}/terms", headers=api,
                          json={"terms": {**reference_terms, "vested_option_shares": 2000001}})
    assert response.status_code == 422
    assert response.json["errors"] == {
        "vested_option_shares": "cannot exceed the 2,000,000 option shares granted"}


@pytest.mark.parametrize("body, status", [({}, 422), ({"terms": 5}, 422), (None, 400)])
def test_put_without_terms(client, api, created, body, status):
    kwargs = {"json": body} if body is not None else {"data": b"nope"}
    response = client.put(f"/api/letters/{created['id']}/terms", headers=api, **kwargs)
    assert response.status_code == status


def test_put_terms_of_an_unknown_letter_is_404(client, api, reference_terms):
    response = client.put("/api/letters/99/terms", headers=api, json={"terms": reference_terms})
    assert response.status_code == 404


def test_put_terms_while_out_for_signature_is_409(app, client, api, created, reference_terms):
    with app.app_context(), get_db().transaction() as session:
        session.execute(update(Letter).values(status=LetterStatus.OUT_FOR_SIGNATURE.value))
    response = client.put(f"/api/letters/{created['id']}/terms", headers=api,
                          json={"terms": {**reference_terms, "hourly_rate": "1"}})
    assert response.status_code == 409
    assert "void its envelope" in response.json["error"]


# --- tokens ------------------------------------------------------------------------------------

def test_revoked_token_is_refused(app, client, api):
    assert client.get("/api/letters", headers=api).status_code == 200
    with app.app_context(), get_db().transaction() as session:
        session.execute(update(ApiToken).values(revoked_at=utcnow()))
    assert client.get("/api/letters", headers=api).status_code == 401


def test_session_cookie_does_not_open_the_api(staff):
    # The API trusts bearer tokens only: a cookie a browser sends by itself proves nothing.
    assert staff.get("/api/letters").status_code == 401


def test_api_needs_no_csrf_token(client, api, reference_terms):
    response = client.post("/api/letters", headers=api,
                           json={"template": "separation_letter", "terms": reference_terms})
    assert response.status_code == 201
