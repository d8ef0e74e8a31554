"""Validation names every bad field at once; derived fields fill in and can be overridden."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from pathlib import Path

import jsonschema
import pytest

from workflow.errors import NotFoundError, TemplateError, TermsError
from workflow.schema import (
    fill_pattern,
    json_schema,
    list_templates,
    load_template,
    sample_terms,
    terms_to_json,
    validate_terms,
)


def errors_for(spec, raw) -> dict[str, str]:
    with pytest.raises(TermsError) as caught:
        validate_terms(spec, raw)
    return caught.value.errors


def test_reference_terms_are_valid_and_typed(spec, reference_terms):
    terms = validate_terms(spec, reference_terms)
    assert terms["letter_date"] == dt.date(2006, 7, 24)
    assert terms["hourly_rate"] == Decimal("500")
    assert terms["cancelled_option_grant_dates"] == [dt.date(2006, 6, 12), dt.date(2006, 6, 22)]
    assert terms["repurchase_unvested_restricted"] is True
    assert list(terms) == list(spec.fields)


def test_derived_fields_are_filled_when_absent(spec, reference_terms):
    raw = dict(reference_terms)
    for key in ("effective_date", "option_exercise_deadline", "service_years"):
        del raw[key]
    terms = validate_terms(spec, raw)
    assert terms["effective_date"] == dt.date(2006, 8, 1)
    assert terms["option_exercise_deadline"] == dt.date(2007, 7, 31)
    assert terms["service_years"] == 3


def test_derived_fields_can_be_overridden(spec, reference_terms):
    terms = validate_terms(spec, {**reference_terms, "effective_date": "2006-08-15",
                                  "service_years": 4})
    assert terms["effective_date"] == dt.date(2006, 8, 15)
    assert terms["service_years"] == 4


def test_deadline_day_is_clamped_to_month_end(spec, reference_terms):
    raw = {**reference_terms, "resignation_date": "2007-08-31", "consulting_months": 6}
    del raw["option_exercise_deadline"]
    raw["effective_date"] = None
    assert validate_terms(spec, raw)["option_exercise_deadline"] == dt.date(2008, 2, 29)


def test_every_bad_field_is_reported_at_once(spec, reference_terms):
    raw = {
        **reference_terms,
        "letter_date": "2006-02-30",
        "company_name": "Acme\x00 Corp",
        "executive_full_name": "x" * 201,
        "executive_first_name": "   ",
        "consulting_months": "twelve",
        "hourly_rate": "12.345",
        "option_shares": 0,
        "vested_option_shares": 3_000_000,
        "repurchase_unvested_restricted": "maybe",
        "cancelled_option_grant_dates": ["2006-06-12", "2006-06-12"],
        "option_agreement_date": "2007-01-01",
        "effective_date": "2006-07-30",
        "surprise": 1,
    }
    del raw["chair_name"]
    errors = errors_for(spec, raw)
    assert set(errors) == {
        "letter_date", "company_name", "executive_full_name", "executive_first_name",
        "consulting_months", "hourly_rate", "option_shares", "repurchase_unvested_restricted",
        "cancelled_option_grant_dates", "option_agreement_date", "effective_date", "surprise",
        "chair_name",
    }
    assert "not a real calendar date" in errors["letter_date"]
    assert "control character" in errors["company_name"]
    assert "201 characters" in errors["executive_full_name"]
    assert errors["executive_first_name"] == "is required"
    assert errors["consulting_months"] == "must be a whole number"
    assert "at most 2 decimals" in errors["hourly_rate"]
    assert errors["option_shares"] == "must be greater than zero"
    assert errors["chair_name"] == "is required"
    assert "twice" in errors["cancelled_option_grant_dates"]
    assert errors["option_agreement_date"].startswith("must be before the resignation date")
    assert errors["effective_date"].startswith("cannot be before the resignation date")
    assert "not a term" in errors["surprise"]


def test_vested_options_cannot_exceed_the_grant(spec, reference_terms):
    errors = errors_for(spec, {**reference_terms, "vested_option_shares": 2_000_001})
    assert errors == {"vested_option_shares":
                      "cannot exceed the 2,000,000 option shares granted"}


@pytest.mark.parametrize("key, value, message", [
    ("hourly_rate", 0, "must be greater than zero"),
    ("hourly_rate", "-5", "must be greater than zero"),
    ("hourly_rate", "abc", "must be an amount such as 500 or 1250.50"),
    ("hourly_rate", "NaN", "must be an amount such as 500 or 1250.50"),
    ("hourly_rate", True, "must be an amount such as 500 or 1250.50"),
    ("consulting_months", 1.5, "must be a whole number"),
    ("consulting_months", True, "must be a whole number"),
    ("consulting_months", -3, "must be greater than zero"),
    ("letter_date", "07/24/2006", "must be a date written YYYY-MM-DD"),
    ("letter_date", 20060724, "must be a date written YYYY-MM-DD"),
    ("company_name", 42, "must be text"),
    ("company_name", "Acme\vCorp", "contains a control character (U+000B)"),
    ("cancelled_option_grant_dates", "not a list", "date 1 must be a date written YYYY-MM-DD"),
    ("cancelled_option_grant_dates", {"a": 1}, "must be a list of dates written YYYY-MM-DD"),
    ("counterpart_copies", 0, "must be greater than zero"),
])
def test_type_and_range_errors_name_the_field(spec, reference_terms, key, value, message):
    errors = errors_for(spec, {**reference_terms, key: value})
    assert key in errors
    assert message in errors[key]


def test_dates_must_be_in_order(spec, reference_terms):
    errors = errors_for(spec, {**reference_terms, "option_exercise_deadline": "2006-08-01",
                               "restricted_stock_agreement_date": "2006-07-31",
                               "cancelled_option_grant_dates": ["2006-06-12", "2006-08-02"]})
    assert errors["option_exercise_deadline"].startswith("must be after the agreement effective")
    assert errors["restricted_stock_agreement_date"].startswith("must be before")
    assert errors["cancelled_option_grant_dates"].startswith("August 2, 2006 must be before")


def test_numbers_arrive_as_form_strings(spec, reference_terms):
    raw = {k: (str(v) if isinstance(v, int | bool) else v) for k, v in reference_terms.items()}
    raw["repurchase_unvested_restricted"] = "true"
    raw["option_shares"] = "2,000,000"
    raw["cancelled_option_grant_dates"] = "2006-06-12; 2006-06-22"
    assert validate_terms(spec, raw) == validate_terms(spec, reference_terms)


def test_not_an_object(spec):
    assert errors_for(spec, ["a"]) == {"terms": "must be a JSON object of term keys and values"}


def test_json_round_trip_and_schema(spec, reference_terms):
    terms = validate_terms(spec, reference_terms)
    as_json = terms_to_json(spec, terms)
    assert as_json["hourly_rate"] == "500"
    assert validate_terms(spec, as_json) == terms
    schema = json_schema(spec)
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(as_json, schema)
    assert set(schema["properties"]) == set(spec.fields)
    assert "effective_date" not in schema["required"]
    assert "company_name" in schema["required"]


def test_every_field_has_label_help_group_and_example(spec):
    for field in spec.fields.values():
        assert field.label and field.help and field.group in spec.groups
        assert field.example is not None
    assert sample_terms(spec)["company_name"] == "Capstone Turbine Corporation"


def test_templates_are_listed_and_unknown_ones_refused(tmp_path):
    assert "separation_letter" in list_templates()
    with pytest.raises(NotFoundError):
        load_template("no_such_letter")
    with pytest.raises(NotFoundError):
        load_template("../etc/passwd")


def test_broken_schema_is_refused_with_its_file_name(tmp_path):
    (tmp_path / "broken.docx").write_bytes(b"")
    (tmp_path / "broken.toml").write_text("[fields.a]\ntype = 'colour'\ngroup='x'\n")
    with pytest.raises(TemplateError, match="broken.toml"):
        load_template("broken", tmp_path)
    (tmp_path / "broken.toml").write_text("not = [valid")
    with pytest.raises(TemplateError, match="broken.toml: not valid TOML"):
        load_template("broken", tmp_path)


def _schema_with(tmp_path, extra: str, template: str = "") -> Path:
    text = f"""
[template]
title = "Tiny"
{template}
[groups]
main = "Main"
[fields.party_name]
label = "Name"
group = "main"
type = "text"
[fields.start_date]
label = "Start"
group = "main"
type = "date"
{extra}
"""
    (tmp_path / "tiny.toml").write_text(text, encoding="utf-8")
    (tmp_path / "tiny.docx").write_bytes(b"")
    return tmp_path


def test_parties_title_file_stem_and_columns_are_read(tmp_path):
    folder = _schema_with(tmp_path, '[[parties]]\nrole = "client"\nlabel = "The client"\n'
                          'name = "party_name"\n',
                          'document_title = "Agreement with {party_name} of {start_date}"\n'
                          'file_stem = "{party_name} agreement"\n'
                          'list_columns = ["party_name"]\n')
    spec = load_template("tiny", folder)
    assert spec.signers == ("client",)
    assert spec.party("client").name_term == "party_name"
    assert spec.list_columns == ("party_name",)
    title = fill_pattern(spec.document_title, {"party_name": "Zoë  Dupré",
                                                "start_date": dt.date(2027, 3, 3)})
    assert title == "Agreement with Zoë Dupré of March 3, 2027"


@pytest.mark.parametrize("extra, template, message", [
    ('[[parties]]\nrole = "client"\nname = "nobody"\n', "", "name must be a text field"),
    ('[[parties]]\nrole = "client"\nname = "start_date"\n', "", "name must be a text field"),
    ('[[parties]]\nrole = "Client"\nname = "party_name"\n', "", "role must be lower_snake"),
    ('[[parties]]\nrole = "a"\nname = "party_name"\n[[parties]]\nrole = "a"\n'
     'name = "party_name"\n', "", "declared twice"),
    ('[[parties]]\nrole = "a"\nname = "party_name"\nsigns = 1\n', "", "unknown settings"),
    ("", 'document_title = "Deal of {price}"', "document_title uses {price}"),
    ("", 'list_columns = ["price"]', "list_columns names 'price'"),
    ("", 'signers = ["a"]', "replaced by [[parties]]"),
])
def test_bad_parties_and_patterns_are_refused_by_name(tmp_path, extra, template, message):
    folder = _schema_with(tmp_path, extra, template)
    with pytest.raises(TemplateError, match=re.escape(message)):
        load_template("tiny", folder)
