"""The template library: what is read from an uploaded template, what refuses it, versions
and publishing, the built-in templates, and the letters made from each version."""

from __future__ import annotations

import datetime as dt
import io
import shutil
import zipfile

import pytest
from agreements import PURCHASE_VARIABLES, purchase_agreement
from sqlalchemy import func, select
from support import docx_text

from workflow.errors import NotFoundError, StateError, TemplateProblems
from workflow.letters import (
    create_letter,
    get_letter,
    get_version,
    render_version,
    revise_terms,
    version_template_version,
)
from workflow.library import (
    VariableUse,
    add_template,
    get_template_version,
    guess_type,
    infer_schema,
    inspect_docx,
    key_from_filename,
    publish_template,
    published_version,
    sync_builtin_templates,
    template_spec,
    update_draft,
)
from workflow.models import Letter, Template, TemplateVersion
from workflow.schema import DEFAULT_TEMPLATE_DIR, parse_schema, sample_terms, schema_toml


def rewrite(data: bytes, name: str, old: bytes, new: bytes) -> bytes:
    """The same .docx with one part's bytes replaced."""
    source = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with source, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for item in source.infolist():
            content = source.read(item.filename)
            target.writestr(item, content.replace(old, new) if item.filename == name
                            else content)
    return out.getvalue()


def purchase_terms(spec, **changes):
    return {**sample_terms(spec), **changes}


# --- reading a template ---------------------------------------------------------------------

def test_every_variable_is_read_from_every_part_with_its_type():
    data = purchase_agreement(custom=("Client", "{{ client_code }}"))
    use = inspect_docx(data, "Purchase agreement.docx")
    assert use.problems == [] and use.parsed
    found = {name: (variable.parts, guess_type(variable))
             for name, variable in use.variables.items()}
    expected = {name: ([part], kind) for name, (part, kind) in PURCHASE_VARIABLES.items()}
    expected["client_code"] = (["the custom document properties"], "text")
    assert found == expected
    # The loop's own variable and the functions are not terms.
    assert "item" not in found and "day" not in found and "sign_here" not in found
    assert use.signature_roles == ["buyer", "seller"]


def test_the_inferred_schema_names_the_parties_by_the_terms_printed_under_their_lines():
    use = inspect_docx(purchase_agreement(), "Purchase agreement.docx")
    raw, problems = infer_schema(use, "purchase_agreement", "Purchase agreement")
    assert problems == []
    spec = parse_schema("purchase_agreement", schema_toml(raw))
    assert [(p.role, p.label, p.name_term) for p in spec.parties] == [
        ("buyer", "Buyer", "buyer_name"), ("seller", "Seller", "seller_name")]
    assert spec.fields["buyer_name"].group == "parties"
    assert spec.fields["closing_date"].group == "terms"
    assert spec.document_title == "Purchase agreement: {buyer_name} and {seller_name}"
    assert spec.file_stem == "{buyer_name} purchase agreement"
    assert spec.list_columns == ("buyer_name", "seller_name")
    assert spec.fields["goods"].type == "text_list"
    assert spec.fields["delivery_dates"].type == "date_list"
    assert spec.fields["include_warranty"].type == "boolean"
    assert spec.fields["purchase_price"].type == "decimal"
    assert spec.fields["purchase_price"].decimal_places == 2


@pytest.mark.parametrize("name, iterated, condition_only, kind", [
    ("start_date", False, False, "date"),
    ("hourly_rate", False, False, "decimal"),
    ("loan_amount", False, False, "decimal"),
    ("unit_price", False, False, "decimal"),
    ("filing_fee", False, False, "decimal"),
    ("copy_count", False, False, "integer"),
    ("option_shares", False, False, "integer"),
    ("notice_days", False, False, "integer"),
    ("term_months", False, False, "integer"),
    ("term_years", False, False, "integer"),
    ("weekly_hours", False, False, "integer"),
    ("number_of_copies", False, False, "integer"),
    ("is_exclusive", False, False, "boolean"),
    ("has_deposit", False, False, "boolean"),
    ("renewal", False, True, "boolean"),
    ("payment_dates", True, False, "date_list"),
    ("witnesses", True, False, "text_list"),
    ("client_name", False, False, "text"),
])
def test_types_are_guessed_from_names_and_use(name, iterated, condition_only, kind):
    assert guess_type(VariableUse(name, iterated=iterated, condition_only=condition_only)) == kind


@pytest.mark.parametrize("filename, key", [
    ("Mutual NDA (v2).docx", "mutual_nda_v2"),
    ("purchase_agreement.docx", "purchase_agreement"),
    ("Société Générale – lettre.DOCX", "societe_generale_lettre"),
    ("2027 lease.docx", "template_2027_lease"),
    ("../../etc/passwd.docx", "passwd"),
    ("C:\\Users\\ann\\Side letter.docx", "side_letter"),
    ("###.docx", "template"),
])
def test_a_key_is_made_from_the_file_name(filename, key):
    assert key_from_filename(filename) == key


# --- refusals ---------------------------------------------------------------------------------

def _broken_purchase_agreement() -> bytes:
    data = purchase_agreement(extra_body=["{{ appendix_ref|shout }} and {{ make_copy(3) }}"])
    return rewrite(data, "word/footer1.xml", b"{{ footer_note }}", b"{{ footer_note }")


def _schema_with_mistakes() -> str:
    use = inspect_docx(purchase_agreement(), "p.docx")
    raw, _ = infer_schema(use, "purchase_agreement", "Purchase agreement")
    del raw["fields"]["deal_code"]
    raw["fields"]["escrow_agent"] = {"label": "Escrow agent", "group": "terms", "type": "text"}
    raw["fields"]["guarantor_name"] = {"label": "Guarantor", "group": "parties",
                                       "type": "text"}
    raw["parties"].append({"role": "guarantor", "label": "The guarantor",
                           "name": "guarantor_name"})
    return schema_toml(raw)


def test_every_reason_to_refuse_a_template_is_listed_at_once(database):
    with pytest.raises(TemplateProblems) as refused, database.transaction() as session:
        add_template(session, _broken_purchase_agreement(), "Purchase agreement.docx", None,
                     schema=_schema_with_mistakes())
    problems = refused.value.problems
    expected = [
        "footer 1: a tag does not parse (unexpected '}'), near “{{ footer_note }”.",
        "the body: uses the filter “shout”, which does not exist",
        "the body: calls make_copy(), which is not a function templates may use.",
        "the body: uses “appendix_ref”, which the schema has no field for.",
        "the document properties: uses “deal_code”, which the schema has no field for.",
        "the schema's field “escrow_agent” is never used by the template.",
        "the schema's field “guarantor_name” is never used by the template.",
        "The guarantor (guarantor) has no signature field; put {{ sign_here('guarantor') }}",
    ]
    for sentence in expected:
        assert any(p.startswith(sentence) for p in problems), (sentence, problems)
    assert len(problems) == len(expected)
    # The field of the part that does not parse is not called unused.
    assert not any("footer_note" in p and "never used" in p for p in problems)
    with database.transaction() as session:
        assert session.scalar(select(func.count()).select_from(TemplateVersion)) == 0
        assert session.scalar(select(func.count()).select_from(Template)) == 0


def test_a_signing_field_of_an_undeclared_party_is_refused(database):
    schema = _schema_with_mistakes().replace('[[parties]]\nrole = "seller"',
                                             '[[parties]]\nrole = "vendor"')
    data = purchase_agreement()
    with pytest.raises(TemplateProblems) as refused, database.transaction() as session:
        add_template(session, data, "p.docx", None, schema=schema)
    assert any("sign_here('seller') names a role the schema does not declare" in p
               for p in refused.value.problems), refused.value.problems


def test_a_party_whose_name_is_never_printed_is_refused_by_name(database):
    data = purchase_agreement(parties=("buyer", "seller", "witness"))
    data = rewrite(data, "word/document.xml", b"{{ witness_name }}", b"Witness")
    with pytest.raises(TemplateProblems) as refused, database.transaction() as session:
        add_template(session, data, "p.docx", None)
    assert refused.value.problems == [
        "party “witness” (sign_here('witness')) needs its name printed under its signature "
        "line: put {{ witness_name }} there."]


def test_a_bad_schema_lists_each_of_its_problems(database):
    schema = _schema_with_mistakes().replace('type = "date"', 'type = "colour"', 1)
    schema += '\n[fields.extra]\nlabel = "Extra"\ngroup = "nowhere"\ntype = "text"\n'
    with pytest.raises(TemplateProblems) as refused, database.transaction() as session:
        add_template(session, purchase_agreement(), "p.docx", None, schema=schema)
    problems = refused.value.problems
    assert any("has type 'colour'" in p for p in problems)
    assert any("field extra is in group 'nowhere'" in p for p in problems)


@pytest.mark.parametrize("hostile, message", [
    (b'<!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]>', "declares a DTD or entities"),
    (b"bomb", "refused as a zip bomb"),
    (b"not a zip", "not a .docx file"),
])
def test_hostile_uploads_are_refused_before_they_are_parsed(database, hostile, message):
    data = purchase_agreement()
    if hostile == b"bomb":
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("word/document.xml", b"<w:document>" + b" " * 60_000_000)
        data = out.getvalue()
    elif hostile == b"not a zip":
        data = b"PK no zip at all"
    else:
        data = rewrite(data, "word/document.xml", b"?>", b"?>" + hostile)
    with pytest.raises(TemplateProblems) as refused, database.transaction() as session:
        add_template(session, data, "evil.docx", None)
    (problem,) = refused.value.problems
    assert problem.startswith("evil.docx: ") and message in problem


def test_a_key_that_is_not_lower_snake_case_is_refused(database):
    with pytest.raises(TemplateProblems, match="key: “Bad Key” must be lower_snake_case"), \
            database.transaction() as session:
        add_template(session, purchase_agreement(), "p.docx", None, key="Bad Key")


# --- versions and publishing ------------------------------------------------------------------

def _upload(database, data: bytes, **kwargs):
    with database.transaction() as session:
        version = add_template(session, data, "Purchase agreement.docx", None, **kwargs)
        return version.template.key, version.number, version.status


def test_a_draft_makes_no_letter_until_it_is_published(database):
    key, number, status = _upload(database, purchase_agreement())
    assert (key, number, status) == ("purchase_agreement", 1, "draft")
    with database.transaction() as session:
        spec = template_spec(get_template_version(session, key))
    with pytest.raises(StateError, match="is a draft") as refused, \
            database.transaction() as session:
        create_letter(session, key, purchase_terms(spec), None)
    assert refused.value.code == "template_not_published"
    with database.transaction() as session:
        publish_template(session, key, None, None)
        letter = create_letter(session, key, purchase_terms(spec, buyer_name="Ana Lima"), None)
        assert letter.title == "Purchase agreement: Ana Lima and Seller name"
        assert letter.file_stem == "ana-lima-purchase-agreement"
        assert letter.list_values == [
            {"term": "buyer_name", "label": "Buyer name", "value": "Ana Lima"},
            {"term": "seller_name", "label": "Seller name", "value": "Seller name"}]
        version = get_version(session, letter)
        assert version.documents[0].filename == "ana-lima-purchase-agreement-v1.docx"
    with pytest.raises(StateError, match="already published"), \
            database.transaction() as session:
        publish_template(session, key, 1, None)


def test_a_letter_keeps_its_template_version_when_a_new_one_is_published(database):
    first = purchase_agreement()
    key, _, _ = _upload(database, first)
    with database.transaction() as session:
        publish_template(session, key, None, None)
        spec = template_spec(published_version(session, key))
        letter_id = create_letter(session, key, purchase_terms(spec), None).id
        before = render_version(session, get_version(session, get_letter(session, letter_id)))
    second = rewrite(first, "word/document.xml", b"Purchase agreement<",
                     b"Amended purchase agreement<")
    assert _upload(database, second) == (key, 2, "draft")
    with database.transaction() as session:
        publish_template(session, key, 2, None)
        letter = get_letter(session, letter_id)
        version = get_version(session, letter)
        # Rendered again (as when a counterpart is signed): the bytes of version 1.
        again = render_version(session, version)
        assert "Amended" not in docx_text(again)
        assert docx_text(again) == docx_text(before)
        assert version_template_version(session, version).number == 1
        # New terms make a new letter version, still of template version 1.
        revised = revise_terms(session, letter_id, purchase_terms(spec, buyer_name="Bo Ek"),
                               None)
        assert version_template_version(session, revised).number == 1
        assert "Amended" not in docx_text(render_version(session, revised))
        newer = create_letter(session, key, purchase_terms(spec), None)
        assert "Amended purchase agreement" in docx_text(
            render_version(session, get_version(session, newer)))
        assert version_template_version(session, get_version(session, newer)).number == 2


def test_a_new_upload_keeps_what_the_previous_schema_said_of_its_variables(database):
    key, _, _ = _upload(database, purchase_agreement())
    with database.transaction() as session:
        version = get_template_version(session, key)
        schema = version.schema_toml.replace('label = "Buyer name"',
                                             'label = "The buyer\'s legal name"')
        update_draft(session, key, 1, schema)
    extended = purchase_agreement(extra_body=["Inspection within {{ inspection_days }} days."])
    assert _upload(database, extended)[1] == 2
    with database.transaction() as session:
        spec = template_spec(get_template_version(session, key, 2))
    assert spec.fields["buyer_name"].label == "The buyer's legal name"
    assert spec.fields["inspection_days"].type == "integer"


def test_a_draft_s_schema_is_edited_until_it_is_published(database):
    key, _, _ = _upload(database, purchase_agreement())
    with database.transaction() as session:
        schema = get_template_version(session, key).schema_toml
    with pytest.raises(TemplateProblems) as refused, database.transaction() as session:
        update_draft(session, key, 1, schema.replace("[fields.goods]", "[fields.wares]"))
    assert "the body: uses “goods”, which the schema has no field for." in refused.value.problems
    assert "the schema's field “wares” is never used by the template." in refused.value.problems
    with database.transaction() as session:
        update_draft(session, key, 1, schema.replace('title = "Purchase agreement"',
                                                     'title = "Sale of goods"'))
        assert template_spec(get_template_version(session, key)).title == "Sale of goods"
        publish_template(session, key, 1, None)
    with pytest.raises(StateError, match="is published and never changes"), \
            database.transaction() as session:
        update_draft(session, key, 1, schema)


def test_publishing_needs_example_terms_that_render(database):
    key, _, _ = _upload(database, purchase_agreement())
    with database.transaction() as session:
        schema = get_template_version(session, key).schema_toml
        start = schema.index("[fields.closing_date]")
        end = schema.index("[fields.", start + 1)
        section = schema[start:end]
        without = "\n".join(line for line in section.splitlines()
                            if not line.startswith("example"))
        update_draft(session, key, 1, schema.replace(section, without + "\n"))
    with pytest.raises(TemplateProblems) as refused, database.transaction() as session:
        publish_template(session, key, 1, None)
    assert refused.value.problems == ["the example of “closing_date” is required."]
    with database.transaction() as session:
        assert get_template_version(session, key).status == "draft"


def test_unknown_templates_and_versions(database):
    with database.transaction() as session:
        with pytest.raises(NotFoundError, match="There is no template named 'nope'"):
            published_version(session, "nope")
        with pytest.raises(NotFoundError):
            get_template_version(session, "../etc")
        add_template(session, purchase_agreement(), "p.docx", None, key="deal")
        with pytest.raises(NotFoundError, match="has no version 7"):
            get_template_version(session, "deal", 7)


# --- built-in templates -------------------------------------------------------------------------

def test_built_ins_load_once_and_a_changed_file_becomes_a_new_version(database, tmp_path):
    folder = tmp_path / "templates"
    shutil.copytree(DEFAULT_TEMPLATE_DIR, folder)
    with database.transaction() as session:
        first = sync_builtin_templates(session, folder)
        assert {v.template.key for v in first} == {"separation_letter",
                                                   "consulting_agreement"}
        assert all(v.status == "published" and v.number == 1 for v in first)
        assert sync_builtin_templates(session, folder) == []
    schema = folder / "separation_letter.toml"
    schema.write_text(schema.read_text().replace(
        'title = "Executive separation and consulting letter"',
        'title = "Executive separation letter"'))
    with database.transaction() as session:
        (changed,) = sync_builtin_templates(session, folder)
        assert (changed.template.key, changed.number, changed.status) == \
            ("separation_letter", 2, "published")
        assert template_spec(published_version(session, "separation_letter")).title == \
            "Executive separation letter"
        assert sync_builtin_templates(session, folder) == []


def test_a_broken_built_in_is_left_out_and_the_others_load(database, tmp_path, caplog):
    folder = tmp_path / "templates"
    shutil.copytree(DEFAULT_TEMPLATE_DIR, folder)
    (folder / "consulting_agreement.toml").write_text("not = [valid")
    with database.transaction() as session:
        loaded = [v.template.key for v in sync_builtin_templates(session, folder)]
    assert loaded == ["separation_letter"]
    assert "consulting_agreement" in caplog.text and "not valid TOML" in caplog.text


def test_letters_are_named_by_their_template(database, reference_terms):
    with database.transaction() as session:
        letter = create_letter(session, "separation_letter",
                               {**reference_terms, "executive_full_name": "Zoë Dupré"}, None)
        assert letter.title == "Separation letter of Zoë Dupré, Capstone Turbine Corporation"
        assert letter.file_stem == "zoe-dupre-separation-letter"
        assert [c["value"] for c in letter.list_values] == ["Zoë Dupré",
                                                            "Capstone Turbine Corporation"]
        assert "zoe dupre" in letter.search_text and "zoë dupré" in letter.search_text
        assert session.scalar(select(Letter.title)) == letter.title
        assert version_template_version(session, get_version(session, letter)).origin == \
            "builtin"


# --- the upgrade ------------------------------------------------------------------------------

def test_the_upgrade_names_existing_letters_by_their_template(tmp_path, database_url,
                                                              reference_terms):
    """A database made before the template library: its letters get their title, file stem
    and listed terms from their terms, and their versions the built-in template version."""
    import hashlib

    import sqlalchemy as sa
    from alembic import command
    from alembic.config import Config

    from workflow.db import MIGRATIONS, Database, database_url_for

    database = Database(database_url_for(tmp_path, database_url))
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with database.engine.begin() as connection:
        config.attributes["connection"] = connection
        # (A PostgreSQL test database is a copy of a migrated one: take it back first.)
        command.downgrade(config, "base")
        command.upgrade(config, "0003")
    now = dt.datetime(2026, 11, 1, 12, 0)
    sha = hashlib.sha256((DEFAULT_TEMPLATE_DIR / "separation_letter.docx").read_bytes()
                         ).hexdigest()
    letters = sa.table("letters", *(sa.column(c) for c in (
        "id", "template", "executive_name", "company_name", "status", "current_version",
        "created_at", "updated_at", "search_text")))
    versions = sa.table("letter_versions", *(sa.column(c) for c in (
        "id", "letter_id", "number", "terms", "template_name", "template_sha256",
        "created_at")), sa.column("terms", sa.JSON))
    with database.engine.begin() as connection:
        for letter_id, template, executive in ((1, "separation_letter", "Zoë Dupré"),
                                               (2, "retired_letter", "Ann Able")):
            connection.execute(letters.insert().values(
                id=letter_id, template=template, executive_name=executive,
                company_name="Acme", status="draft", current_version=1, created_at=now,
                updated_at=now, search_text=""))
            connection.execute(versions.insert().values(
                id=letter_id, letter_id=letter_id, number=1, template_name=template,
                terms={**reference_terms, "executive_full_name": executive,
                       "company_name": "Acme"},
                template_sha256=sha, created_at=now))
    database.migrate()
    with database.transaction() as session:
        rows = session.execute(sa.text(
            "SELECT title, file_stem, search_text FROM letters ORDER BY id")).all()
        assert rows[0][:2] == ("Separation letter of Zoë Dupré, Acme",
                               "zoe-dupre-separation-letter")
        assert "zoe dupre" in rows[0][2] and "acme" in rows[0][2]
        assert rows[1][:2] == ("Ann Able, Acme", "ann-able")  # its template is gone
        first = session.get(Letter, 1)
        assert [c["value"] for c in first.list_values] == ["Zoë Dupré", "Acme"]
        columns = {c["name"] for c in sa.inspect(session.connection()).get_columns("letters")}
        assert "executive_name" not in columns and "company_name" not in columns
        sync_builtin_templates(session)
        version = get_version(session, first)
        assert version.template_version_id is not None
        assert version_template_version(session, version).docx_sha256 == sha
    database.dispose()
