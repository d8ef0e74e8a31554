"""The template library in the browser and through the API: an administrator uploads a
template, edits its terms, makes a test render and publishes it; staff then make letters of
it; and letters of different templates share one table, each with its own columns."""

from __future__ import annotations

import io
from typing import Any

import lxml.html
import pytest
from agreements import purchase_agreement
from click.testing import CliRunner
from PIL import Image
from sqlalchemy import select

from web.database import get_db
from web.testing import csrf_token, terms_form_data
from workflow.accounts import create_api_token
from workflow.models import TemplateVersion

PURCHASE_TERMS = {
    "closing_date": "2027-03-01", "purchase_price": "12500.50", "number_of_units": 40,
    "warranty_months": 6, "include_warranty": True, "goods": ["oak desks", "walnut chairs"],
    "delivery_dates": ["2027-03-15", "2027-04-15"], "buyer_name": "Ana Lima",
    "seller_name": "Bruno Costa", "matter_reference": "M-7", "footer_note": "Confidential",
    "governing_law": "Portugal", "deal_code": "D-1",
}


def form_values(html: str, selector: str) -> dict[str, Any]:
    """What a browser posts for a form of the page (found by XPath), as it stands."""
    form = lxml.html.fromstring(html).xpath(selector)[0]
    data: dict[str, Any] = {}
    for element in form.iter("input", "select", "textarea"):
        name = element.get("name")
        if not name:
            continue
        if element.tag == "input" and element.get("type") in ("checkbox", "radio"):
            if element.get("checked") is not None:
                data[name] = element.get("value", "on")
        elif element.tag == "select":
            chosen = element.xpath(".//option[@selected]") or element.xpath(".//option")
            data[name] = chosen[0].get("value", "") if chosen else ""
        elif element.tag == "textarea":
            data[name] = element.text or ""
        else:
            data[name] = element.get("value", "")
    return data


@pytest.fixture()
def admin(client, sign_in, credentials):
    return sign_in(client, *credentials["admin"])


@pytest.fixture()
def staff_client(app, sign_in):
    return sign_in(app.test_client())


@pytest.fixture()
def admin_api(app, credentials) -> dict[str, str]:
    email = credentials["admin"][0]
    with app.app_context(), get_db().transaction() as session:
        return {"Authorization": f"Bearer {create_api_token(session, email, 'admin')}"}


def upload_page(client, data: bytes, filename: str = "Purchase agreement.docx", **fields):
    page = client.get("/admin/templates")
    return client.post("/admin/templates", data={
        "csrf_token": csrf_token(page.text), "file": (io.BytesIO(data), filename), **fields},
        content_type="multipart/form-data")


def versions(app) -> list[tuple[str, int, str]]:
    with app.app_context(), get_db().transaction() as session:
        return [(v.template.key, v.number, v.status) for v in session.scalars(
            select(TemplateVersion).order_by(TemplateVersion.id))]


# --- the pages ----------------------------------------------------------------------------------

def test_upload_edit_test_render_and_publish_through_the_pages(app, admin, staff_client):
    uploaded = upload_page(admin, purchase_agreement())
    assert uploaded.status_code == 302
    location = uploaded.headers["Location"]
    assert location == "/admin/templates/purchase_agreement/versions/1"
    page = admin.get(location)
    assert page.status_code == 200
    tree = lxml.html.fromstring(page.text)
    assert tree.xpath("string(//*[@data-version-status])") == "Draft"
    # The terms read from the template, with the types guessed for them.
    types = {key: tree.xpath(f'string(//select[@name="f-{key}-type"]/option[@selected]/@value)')
             for key in ("goods", "delivery_dates", "include_warranty", "governing_law",
                         "matter_reference", "deal_code", "purchase_price")}
    assert types == {"goods": "text_list", "delivery_dates": "date_list",
                     "include_warranty": "boolean", "governing_law": "text",
                     "matter_reference": "text", "deal_code": "text",
                     "purchase_price": "decimal"}

    # The staff cannot choose it yet.
    assert "purchase_agreement" not in staff_client.get("/letters/new").text

    # Edit: a label, an example, the title and the listed terms.
    data = form_values(page.text, "//form[contains(@class, 'schema-form')]")
    data.update({"title": "Sale of goods", "f-buyer_name-label": "Buyer's legal name",
                 "f-buyer_name-example": "Ana Lima", "f-seller_name-example": "Bruno Costa",
                 "document_title": "Sale of goods to {buyer_name}",
                 "list_columns": "buyer_name, purchase_price"})
    saved = admin.post(location, data=data)
    assert saved.status_code == 302, saved.text
    page = admin.get(location)
    assert 'value="Buyer&#39;s legal name"' in page.text
    assert "<h1>Sale of goods</h1>" in page.text

    # A mistake in the form comes back with every problem and what was typed.
    wrong = dict(data, **{"f-goods-type": "date", "f-purchase_price-min": "lots"})
    refused = admin.post(location, data=wrong)
    assert refused.status_code == 422
    assert "field purchase_price: min must be a number." in refused.text
    assert 'value="lots"' in refused.text

    # The test render shows the pages of the letter with the example terms.
    rendered = admin.post(f"{location}/test-render",
                          data={"csrf_token": csrf_token(page.text)})
    assert rendered.status_code == 302
    page = admin.get(location)
    pictures = lxml.html.fromstring(page.text).xpath('//section[@id="test-render"]//img/@src')
    assert pictures == [f"{location}/pages/1.png"]
    picture = admin.get(pictures[0])
    assert picture.status_code == 200 and picture.mimetype == "image/png"
    assert Image.open(io.BytesIO(picture.data)).size[0] > 500

    published = admin.post(f"{location}/publish", data={"csrf_token": csrf_token(page.text)})
    assert published.status_code == 302
    page = admin.get(location)
    assert lxml.html.fromstring(page.text).xpath("string(//*[@data-version-status])") == \
        "Published"
    assert versions(app)[-1] == ("purchase_agreement", 1, "published")

    # Staff choose it and make a letter of it; its title and listed terms are the template's.
    chooser = staff_client.get("/letters/new").text
    assert 'href="/letters/new?template=purchase_agreement">Sale of goods</a>' in chooser
    form = staff_client.get("/letters/new?template=purchase_agreement").text
    assert 'id="term-goods-1"' in form and "Add another item" in form
    created = staff_client.post("/letters/new", data=terms_form_data(
        PURCHASE_TERMS, form, template="purchase_agreement"))
    assert created.status_code == 302, created.text
    letter = staff_client.get(created.headers["Location"]).text
    assert "<h1>Sale of goods to Ana Lima</h1>" in letter
    assert "Buyer&#39;s legal name: Ana Lima" in letter
    assert "<dd>oak desks and walnut chairs</dd>" in letter


def test_a_refused_upload_lists_every_problem_and_stores_nothing(app, admin):
    data = purchase_agreement(extra_body=["{{ total|shout }} {{ stamp() }}"])
    refused = upload_page(admin, data)
    assert refused.status_code == 422
    text = " ".join(lxml.html.fromstring(refused.text).text_content().split())
    assert "The template was refused for 2 problems" in text
    assert "the body: uses the filter “shout”, which does not exist" in text
    assert "the body: calls stamp(), which is not a function templates may use." in text
    assert versions(app) == [("consulting_agreement", 1, "published"),
                             ("separation_letter", 1, "published")]


def test_staff_may_not_open_the_template_library(app, staff_client):
    assert staff_client.get("/admin/templates").status_code == 403
    page = staff_client.get("/letters")
    refused = staff_client.post("/admin/templates", data={
        "csrf_token": csrf_token(page.text),
        "file": (io.BytesIO(purchase_agreement()), "p.docx")},
        content_type="multipart/form-data")
    assert refused.status_code == 403
    assert "Templates</a>" not in page.text
    assert len(versions(app)) == 2


def test_a_published_version_never_changes_and_a_new_draft_is_made_from_it(app, admin):
    page = admin.get("/admin/templates/separation_letter/versions/1").text
    assert "This version is published" in page and "schema-form" not in page
    made = admin.post("/admin/templates/separation_letter/versions/1/new-draft",
                      data={"csrf_token": csrf_token(page)})
    assert made.headers["Location"] == "/admin/templates/separation_letter/versions/2"
    assert versions(app)[-1] == ("separation_letter", 2, "draft")
    docx = admin.get("/admin/templates/separation_letter/versions/2/template.docx")
    assert docx.data[:2] == b"PK"
    toml = admin.get("/admin/templates/separation_letter/versions/2/schema.toml")
    assert b"[[parties]]" in toml.data


# --- the API --------------------------------------------------------------------------------

def test_upload_and_publish_through_the_api(client, admin_api, api):
    created = client.post("/api/templates", headers=admin_api, data={
        "file": (io.BytesIO(purchase_agreement()), "Purchase agreement.docx"),
        "key": "sale"}, content_type="multipart/form-data")
    assert created.status_code == 201, created.json
    answer = created.json
    assert (answer["key"], answer["version"], answer["status"]) == ("sale", 1, "draft")
    assert answer["fields"]["goods"]["type"] == "text_list"
    assert answer["fields"]["closing_date"] == {
        "type": "date", "label": "Closing date", "required": True, "group": "terms",
        "help": "Used in the body.", "example": answer["fields"]["closing_date"]["example"]}
    assert answer["parties"] == [
        {"role": "buyer", "label": "Buyer", "name": "buyer_name", "email": None},
        {"role": "seller", "label": "Seller", "name": "seller_name", "email": None}]
    assert created.headers["Location"] == "http://localhost/api/templates/sale"

    # A draft makes no letter, and staff do not see it.
    terms = {k: v for k, v in PURCHASE_TERMS.items()}
    draft = client.post("/api/letters", headers=api, json={"template": "sale", "terms": terms})
    assert draft.status_code == 409
    assert draft.json["error"] == ("The template 'sale' is a draft: an administrator "
                                   "publishes it before letters can be made from it.")
    assert draft.json["code"] == "template_not_published"
    assert "sale" not in [t["key"] for t in client.get("/api/templates", headers=api).json[
        "templates"]]
    assert client.get("/api/templates/sale", headers=api).status_code == 404
    listed = client.get("/api/templates", headers=admin_api).json["templates"]
    assert {"key": "sale", "status": "draft", "published_version": None} == {
        k: v for k, v in next(t for t in listed if t["key"] == "sale").items()
        if k in ("key", "status", "published_version")}

    published = client.post("/api/templates/sale/publish", headers=admin_api)
    assert published.status_code == 200 and published.json["status"] == "published"
    again = client.post("/api/templates/sale/publish", headers=admin_api)
    assert again.status_code == 409 and "already published" in again.json["error"]
    schema = client.get("/api/templates/sale/schema", headers=api).json
    assert schema["properties"]["goods"]["items"]["type"] == "string"
    made = client.post("/api/letters", headers=api, json={"template": "sale", "terms": terms})
    assert made.status_code == 201, made.json
    assert made.json["title"] == "Purchase agreement: Ana Lima and Bruno Costa"
    assert made.json["template_version"] == 1

    detail = client.get("/api/templates/sale", headers=api).json
    assert (detail["status"], detail["published_version"]) == ("published", 1)
    assert [v["version"] for v in detail["versions"]] == [1]


def test_staff_tokens_may_not_upload_or_publish(app, client, api):
    upload = client.post("/api/templates", headers=api, data={
        "file": (io.BytesIO(purchase_agreement()), "p.docx")},
        content_type="multipart/form-data")
    assert upload.status_code == 403
    assert upload.json["error"].startswith("Only administrators may manage templates")
    assert client.post("/api/templates/separation_letter/publish", headers=api
                       ).status_code == 403
    assert len(versions(app)) == 2


def test_a_refused_upload_answers_422_with_every_problem(client, admin_api, app):
    data = purchase_agreement(extra_body=["{{ total|shout }} {{ stamp() }}"])
    refused = client.post("/api/templates", headers=admin_api, data={
        "file": (io.BytesIO(data), "p.docx")}, content_type="multipart/form-data")
    assert refused.status_code == 422
    assert refused.json["error"] == "The template was refused: 2 problems."
    assert refused.json["errors"][1] == \
        "the body: calls stamp(), which is not a function templates may use."
    missing = client.post("/api/templates", headers=admin_api, data={},
                          content_type="multipart/form-data")
    assert missing.status_code == 400 and missing.json["error"].startswith("file: ")
    schema = client.post("/api/templates", headers=admin_api, data={
        "file": (io.BytesIO(purchase_agreement()), "p.docx"),
        "schema": (io.BytesIO(b"[fields]\nx = 1\n"), "p.toml")},
        content_type="multipart/form-data")
    assert schema.status_code == 422
    assert schema.json["errors"] == ["p.toml: field x must be a table of settings ([fields.x])."]
    assert len(versions(app)) == 2


def test_letters_of_two_templates_share_the_table_each_with_its_columns(
        app, client, admin_api, api, staff_client, reference_terms):
    client.post("/api/templates", headers=admin_api, data={
        "file": (io.BytesIO(purchase_agreement()), "Purchase agreement.docx")},
        content_type="multipart/form-data")
    client.post("/api/templates/purchase_agreement/publish", headers=admin_api)
    for template, terms in (("separation_letter", reference_terms),
                            ("purchase_agreement", PURCHASE_TERMS)):
        made = client.post("/api/letters", headers=api,
                           json={"template": template, "terms": terms})
        assert made.status_code == 201, made.json
    listed = client.get("/api/letters", headers=api).json["letters"]
    assert [(x["template"], x["title"], [(c["label"], c["value"]) for c in x["columns"]])
            for x in listed] == [
        ("purchase_agreement", "Purchase agreement: Ana Lima and Bruno Costa",
         [("Buyer name", "Ana Lima"), ("Seller name", "Bruno Costa")]),
        ("separation_letter", "Separation letter of John R. Tucker, Capstone Turbine "
         "Corporation",
         [("Executive's full name", "John R. Tucker"),
          ("Company name", "Capstone Turbine Corporation")])]
    page = staff_client.get("/letters").text
    rows = lxml.html.fromstring(page).xpath("//table[contains(@class,'letters-table')]/tbody/tr")
    cells = [[" ".join(c.text_content().split()) for c in row.xpath("./th|./td")][:3]
             for row in rows]
    assert cells == [
        ["Purchase agreement: Ana Lima and Bruno Costa",
         "Buyer name: Ana Lima Seller name: Bruno Costa", "Purchase agreement"],
        ["Separation letter of John R. Tucker, Capstone Turbine Corporation",
         "Executive's full name: John R. Tucker Company name: Capstone Turbine Corporation",
         "Executive separation and consulting letter"]]
    only = staff_client.get("/letters?template=purchase_agreement").text
    assert "1 letter matches from the template Purchase agreement." in " ".join(
        lxml.html.fromstring(only).text_content().split())
    assert [x["template"] for x in client.get("/api/letters?q=bruno", headers=api).json[
        "letters"]] == ["purchase_agreement"]


# --- the command line -------------------------------------------------------------------------

def test_the_command_line_adds_publishes_and_lists_templates(tmp_path, database_url):
    from web.cli import cli

    env = {"COUNTERPART_DATA_DIR": str(tmp_path / "data")}
    if database_url:
        env["COUNTERPART_DATABASE_URL"] = database_url
    good = tmp_path / "Purchase agreement.docx"
    good.write_bytes(purchase_agreement())
    runner = CliRunner()
    added = runner.invoke(cli, ["template", "add", str(good), "--publish"], env=env)
    assert added.exit_code == 0, added.output
    assert "Added purchase_agreement, version 1 (published): Purchase agreement" in added.output
    assert "goods (text_list)" in added.output and "parties: buyer, seller" in added.output
    bad = tmp_path / "broken.docx"
    bad.write_bytes(purchase_agreement(extra_body=["{{ stamp() }}"]))
    refused = runner.invoke(cli, ["template", "add", str(bad), "--key", "purchase_agreement"],
                            env=env)
    assert refused.exit_code == 2
    assert "broken.docx was refused (1 problem); nothing was stored:" in refused.output
    assert "  - the body: calls stamp(), which is not a function" in refused.output
    listed = runner.invoke(cli, ["template", "list"], env=env)
    assert listed.exit_code == 0
    lines = listed.output.splitlines()
    assert lines[0].split() == ["key", "published", "newest", "title"]
    assert any(line.split()[:4] == ["purchase_agreement", "1", "1", "(published)"]
               for line in lines)

