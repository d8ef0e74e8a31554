"""The review before sending: derived terms with how they were derived, dates out of order or
far from today, the parties, and whether anyone saw the version being sent."""

from __future__ import annotations

import datetime as dt
import io

import docx
import pytest

from workflow.accounts import create_user
from workflow.envelopes import SignerSpec
from workflow.formatting import long_date
from workflow.letters import create_letter, generate_document, pending_documents, revise_terms
from workflow.models import User
from workflow.review import record_review_download, review_letter, review_terms, seen_versions
from workflow.schema import parse_schema, validate_terms

NOW = dt.datetime(2025, 1, 20, 15, 0, tzinfo=dt.UTC)
STAFF = "ann@example.com"


def recent_terms(reference_terms: dict) -> dict:
    """The reference letter moved to January 2025, its derived terms left to be derived: five
    and a half years of service."""
    derived = ("effective_date", "option_exercise_deadline", "service_years")
    return {**{k: v for k, v in reference_terms.items() if k not in derived},
            "letter_date": "2025-01-15", "resignation_date": "2025-01-31",
            "option_agreement_date": "2019-08-01", "restricted_stock_agreement_date":
            "2019-08-04", "cancelled_option_grant_dates": ["2024-06-12", "2024-06-22"]}


def codes(warnings) -> list[tuple[str, str | None]]:
    return [(w.code, w.field) for w in warnings]


def message(warnings, code: str, field: str | None) -> str:
    [found] = [w.message for w in warnings if (w.code, w.field) == (code, field)]
    return found


def test_a_derived_term_says_how_it_was_derived_rounded_and_written(spec, reference_terms):
    terms = validate_terms(spec, recent_terms(reference_terms))
    warnings = review_terms(spec, terms, NOW.date(), template=spec.docx_path.read_bytes())
    assert message(warnings, "derived", "service_years") == (
        "Years of service: 6, derived: 5 years 5 months 30 days (5.50 years) from the stock "
        "option agreement date (August 1, 2019) to the resignation date (January 31, 2025), "
        "rounded to the nearest whole year, written as “six years”. To use another value, type "
        "it in the terms form: a typed value overrides the derivation.")
    assert message(warnings, "derived", "effective_date") == (
        "Agreement effective date: February 1, 2025, derived: the day after the resignation "
        "date (January 31, 2025), written as “February 1, 2025”. To use another value, type "
        "it in the terms form: a typed value overrides the derivation.")
    assert message(warnings, "derived", "option_exercise_deadline").startswith(
        "Option exercise deadline: January 31, 2026, derived: the resignation date (January "
        "31, 2025) plus 12 months, the consulting period (months), written as “January 31, "
        "2026”.")


def test_a_derived_term_typed_over_says_what_the_derivation_would_give(spec, reference_terms):
    terms = validate_terms(spec, {**recent_terms(reference_terms), "service_years": 5})
    warnings = review_terms(spec, terms, NOW.date(), template=spec.docx_path.read_bytes())
    assert message(warnings, "derived_overridden", "service_years") == (
        "Years of service: 5, written as “five years”, typed over the derived 6 (5 years 5 "
        "months 30 days (5.50 years) from the stock option agreement date (August 1, 2019) to "
        "the resignation date (January 31, 2025), rounded to the nearest whole year). Clear it "
        "in the terms form to derive it again.")
    assert ("derived", "service_years") not in codes(warnings)


def test_month_ends_that_a_later_month_lacks_are_explained(spec, reference_terms):
    terms = validate_terms(spec, {**recent_terms(reference_terms), "consulting_months": 1})
    warnings = review_terms(spec, terms, NOW.date())
    assert message(warnings, "derived", "option_exercise_deadline").startswith(
        "Option exercise deadline: February 28, 2025, derived: the resignation date (January "
        "31, 2025) plus 1 month, the consulting period (months); January 31 has no match in "
        "February 2025, so it is that month's last day.")


def test_dates_near_today_in_order_give_no_date_warning(spec, reference_terms):
    terms = validate_terms(spec, recent_terms(reference_terms))
    dates = [w for w in review_terms(spec, terms, NOW.date()) if w.code.startswith("date")]
    assert dates == []


def test_dates_far_from_today_past_or_out_of_order_are_named(spec, reference_terms):
    terms = validate_terms(spec, {**recent_terms(reference_terms),
                                  "cancelled_option_grant_dates": ["2024-06-22", "2024-06-12"]})
    # Two years on, the letter's own dates are far, and the dates ahead of it are past.
    later = dt.date(2027, 3, 1)
    warnings = review_terms(spec, terms, later)
    assert codes([w for w in warnings if w.code.startswith("date")]) == [
        ("date_far", "letter_date"), ("date_far", "resignation_date"),
        ("date_in_past", "effective_date"), ("date_in_past", "option_exercise_deadline"),
        ("date_order", "cancelled_option_grant_dates")]
    assert message(warnings, "date_far", "letter_date") == (
        "Letter date: January 15, 2025 is more than a year from today: 2 years 1 month 14 days "
        "before today (March 1, 2027).")
    assert message(warnings, "date_in_past", "option_exercise_deadline") == (
        "Option exercise deadline: January 31, 2026 is already past, 1 year 1 month 1 day "
        "before today (March 1, 2027); it should be ahead.")
    assert message(warnings, "date_order", "cancelled_option_grant_dates") == (
        "Cancelled option grants: the dates are not in order (June 22, 2024, June 12, 2024); "
        "the letter lists them as typed.")
    # Years before, the agreements that must come before the resignation are still ahead.
    earlier = review_terms(spec, terms, dt.date(2019, 1, 1))
    assert ("date_in_future", "option_agreement_date") in codes(earlier)
    assert ("date_in_future", "cancelled_option_grant_dates") in codes(earlier)


def test_the_parties_are_reviewed_as_the_send_form_names_them(spec, reference_terms):
    terms = validate_terms(spec, recent_terms(reference_terms))
    signers = [SignerSpec("company", "Eliot Protsch", "chair@example.com"),
               SignerSpec("executive", "John Tucker", None)]
    warnings = review_terms(spec, terms, NOW.date(), signers=signers,
                            last_emails={"executive": "jt@example.com"})
    assert [w.message for w in warnings if w.code == "party"] == [
        "The company, by its chair: Eliot Protsch (email chair@example.com, from the send "
        "form).",
        "The executive: John Tucker (no email on the send form: hand the link over "
        "yourself)."]


def test_the_parties_are_listed_with_their_emails(spec, reference_terms):
    terms = validate_terms(spec, recent_terms(reference_terms))
    warnings = review_terms(spec, terms, NOW.date(), last_emails={"executive": "jt@example.com"})
    assert [w.message for w in warnings if w.code == "party"] == [
        "The company, by its chair: Eliot Protsch (no email: give one on the send form, or "
        "hand the link over yourself).",
        "The executive: John R. Tucker (no email in the terms; the last envelope went to "
        "jt@example.com)."]
    same = validate_terms(spec, {**recent_terms(reference_terms), "chair_name": "John R. Tucker"})
    assert message(review_terms(spec, same, NOW.date()), "party_same_name",
                   "executive_full_name") == (
        "The executive and The company, by its chair are both John R. Tucker: one person "
        "would sign twice.")


SCHEMA = """
[template]
title = "Lease renewal"
document_title = "Lease of {tenant}"
file_stem = "{tenant} lease"
list_columns = ["tenant"]

[[parties]]
role = "landlord"
label = "The landlord"
name = "landlord"

[[parties]]
role = "tenant"
label = "The tenant"
name = "tenant"
email = "tenant_email"

[groups]
main = "Terms"

[fields.tenant]
label = "Tenant"
group = "main"
type = "text"

[fields.landlord]
label = "Landlord"
group = "main"
type = "text"

[fields.tenant_email]
label = "Tenant's email"
group = "main"
type = "text"

[fields.moved_in]
label = "Move-in date"
group = "main"
type = "date"
before = "renewal"

[fields.renewal]
label = "Renewal date"
group = "main"
type = "date"

[fields.months]
label = "Renewal term (months)"
group = "main"
type = "integer"
min = 1

[fields.lease_ends]
label = "Lease end"
group = "main"
type = "date"
derive = "add_months(renewal, months)"

[fields.tenancy_years]
label = "Years as tenant"
group = "main"
type = "integer"
derive = "whole_years_between(moved_in, renewal)"
"""


def test_the_checks_follow_any_template_s_schema():
    spec = parse_schema("lease_renewal", SCHEMA)
    document = docx.Document()
    document.add_paragraph("After {{ tenancy_years|number_words }} years, the lease of "
                           "{{ tenant }} ends on {{ lease_ends|long_date }}.")
    document.add_paragraph("{{ sign_here('landlord') }} {{ sign_here('tenant') }}")
    buffer = io.BytesIO()
    document.save(buffer)
    terms = validate_terms(spec, {"tenant": "Ada Lovelace", "landlord": "Babbage Estates",
                                  "tenant_email": "ada@example.com", "moved_in": "2016-03-01",
                                  "renewal": "2025-02-01", "months": 24})
    warnings = review_terms(spec, terms, NOW.date(), template=buffer.getvalue())
    assert codes(warnings) == [("derived", "lease_ends"), ("derived", "tenancy_years"),
                               ("party", "landlord"), ("party", "tenant")]
    assert message(warnings, "derived", "tenancy_years").startswith(
        "Years as tenant: 9, derived: 8 years 11 months (8.92 years) from the move-in date "
        "(March 1, 2016) to the renewal date (February 1, 2025), rounded to the nearest whole "
        "year, written as “nine”.")
    assert message(warnings, "party", "tenant") == \
        "The tenant: Ada Lovelace (email ada@example.com)."


@pytest.fixture()
def letter(database, converter, reference_terms):
    with database.transaction() as session:
        create_user(session, STAFF, "a long password")
        user = session.query(User).one()
        letter_id = create_letter(session, "separation_letter", recent_terms(reference_terms),
                                  user).id
        pending = pending_documents(session)
    for document_id in pending:
        generate_document(database, document_id, converter)
    return letter_id


def test_a_version_no_one_on_staff_saw_is_not_yet_reviewed(database, letter):
    with database.transaction() as session:
        warnings = review_letter(session, letter, NOW)
    assert warnings[0].as_json() == {
        "code": "not_reviewed", "field": None,
        "message": "Version 1 is not yet reviewed: no one on staff has downloaded or viewed its "
                   "PDF."}
    with database.transaction() as session:
        document = record_review_download(session, letter, 1, actor=STAFF, ip="192.0.2.4")
        assert document.filename.endswith("-v1.pdf")
    with database.transaction() as session:
        warnings = review_letter(session, letter, NOW)
        assert seen_versions(session, letter) == {1: [STAFF]}
    assert "not_reviewed" not in [w.code for w in warnings]


def test_terms_changed_since_the_last_version_anyone_saw_are_listed(database, letter,
                                                                     reference_terms):
    with database.transaction() as session:
        record_review_download(session, letter, 1, actor=STAFF)
    with database.transaction() as session:
        revise_terms(session, letter, {**recent_terms(reference_terms), "hourly_rate": "600",
                                       "cancelled_option_grant_dates": []}, None)
    with database.transaction() as session:
        warnings = review_letter(session, letter, NOW)
    assert codes(warnings)[:3] == [("not_reviewed", None),
                                   ("changed_since_seen", "hourly_rate"),
                                   ("changed_since_seen", "cancelled_option_grant_dates")]
    assert warnings[1].message == (
        f"Hourly rate (USD) changed since version 1, the last version anyone saw ({STAFF}, on "
        f"{long_date(dt.datetime.now(dt.UTC).date())}): $500 → $600.")
    assert warnings[2].message.endswith(": June 12, 2024 and June 22, 2024 → none.")
