"""The template renders the reference letter word for word, and correct English for others."""

from __future__ import annotations

import difflib
import io
import zipfile

import docx
import pytest
from support import docx_text, letter_words

from workflow.render import render_docx, template_variables
from workflow.schema import validate_terms


def render_text(spec, raw_terms) -> str:
    return docx_text(render_docx(spec, validate_terms(spec, raw_terms)))


def assert_same_words(actual: list[str], expected: list[str]) -> None:
    if actual != expected:
        diff = "\n".join(list(difflib.unified_diff(expected, actual, lineterm="", n=4))[:60])
        pytest.fail(f"the words differ from the reference letter:\n{diff}")


def test_reference_terms_reproduce_the_reference_letter(spec, reference_terms,
                                                        reference_words):
    assert_same_words(letter_words(render_text(spec, reference_terms)), reference_words)


def test_template_variables_equal_schema_fields(spec):
    assert template_variables(spec) == set(spec.fields)


def test_rendered_docx_is_a_well_formed_letter_page(spec, valid_terms):
    document = docx.Document(io.BytesIO(render_docx(spec, valid_terms)))
    section = document.sections[0]
    assert (round(section.page_width.inches, 2), round(section.page_height.inches, 2)) == (8.5, 11)
    assert {round(m.inches, 2) for m in (section.left_margin, section.right_margin,
                                         section.top_margin, section.bottom_margin)} == {1.0}
    assert document.styles["Normal"].font.name == "Times New Roman"
    assert document.styles["Normal"].font.size.pt == 12
    # Page numbers from page 2: a different first page with an empty footer.
    assert section.different_first_page_header_footer
    assert "PAGE" in section.footer._element.xml
    assert "PAGE" not in section.first_page_footer._element.xml


def _terms(reference_terms, **changes):
    return {**reference_terms, **changes}


@pytest.mark.parametrize("grants, expected, absent", [
    ([], "consultant to the Company, and (iii) you are vested as to 375,000 shares of restricted "
         "stock, and the right to accrue additional vesting of the restricted stock under the "
         "award granted to you on August 4, 2003 is hereby cancelled. The Company",
     "(iv)"),
    (["2006-06-12"], "is hereby cancelled, and (iv) the option granted to you on June 12, 2006 "
                     "is hereby cancelled. The Company", "options granted"),
    (["2006-06-12", "2006-06-22"], "(iv) the options granted to you on June 12, 2006 and "
                                   "June 22, 2006 are hereby cancelled.", "and (iii)"),
    (["2006-01-03", "2006-06-12", "2006-06-22"],
     "(iv) the options granted to you on January 3, 2006, June 12, 2006 and June 22, 2006 are "
     "hereby cancelled.", "2006, and June"),
])
def test_cancelled_grants_read_correctly(spec, reference_terms, grants, expected, absent):
    text = render_text(spec, _terms(reference_terms, cancelled_option_grant_dates=grants))
    assert expected in " ".join(text.split())
    assert absent not in text


def test_repurchase_sentence_only_when_asked(spec, reference_terms):
    with_it = render_text(spec, reference_terms)
    without = render_text(spec, _terms(reference_terms, repurchase_unvested_restricted=False))
    sentence = "The Company intends to exercise its repurchase option"
    assert sentence in with_it
    assert sentence not in without
    assert "are hereby cancelled.\n" in without  # the paragraph ends cleanly


@pytest.mark.parametrize("months, phrase", [
    (6, "for a six-month period after"), (12, "for a one-year period after"),
    (18, "for an eighteen-month period after"), (24, "for a two-year period after"),
    (8, "for an eight-month period after"), (11, "for an eleven-month period after"),
])
def test_consulting_period_with_its_article(spec, reference_terms, months, phrase):
    text = render_text(spec, _terms(reference_terms, consulting_months=months,
                                    option_exercise_deadline=None))
    assert phrase in " ".join(text.split())


def test_derived_deadline_follows_the_consulting_period(spec, reference_terms):
    raw = _terms(reference_terms, consulting_months=7)
    del raw["option_exercise_deadline"]
    text = " ".join(render_text(spec, raw).split())
    # July 31 plus seven months is February 29 in a leap year, 28 otherwise: clamped.
    assert "until February 28, 2007" in text


@pytest.mark.parametrize("rate, shown", [
    (500, "$500 per hour"), (1250, "$1,250 per hour"), ("1250.5", "$1,250.50 per hour"),
    (1250.5, "$1,250.50 per hour"), ("99.99", "$99.99 per hour"),
])
def test_hourly_rate_in_figures(spec, reference_terms, rate, shown):
    assert shown in render_text(spec, _terms(reference_terms, hourly_rate=rate))


def test_counts_in_words_and_shares_in_figures(spec, reference_terms):
    text = " ".join(render_text(spec, _terms(
        reference_terms, consulting_hours_per_month=25, invoice_payment_days=30,
        medical_benefits_months=8, option_exercise_window_months=1, confidentiality_years=2,
        non_solicit_years=2, service_years=1, counterpart_copies=3, option_shares=12345678,
        vested_option_shares=1000, vested_restricted_shares=1)).split())
    for phrase in ("up to twenty-five hours per month", "within thirty days of",
                   "for an eight month period following", "would expire one month following",
                   "if sooner, one month after", "for a period of two years:",
                   "for a period of two years and supplement", "for two years thereafter",
                   "during the past one year", "please execute three copies",
                   "acquire 12,345,678 shares", "vested as to 1,000 shares",
                   "vested as to 1 shares of restricted stock"):
        assert phrase in text, phrase


def test_names_and_titles_in_their_places(spec, reference_terms):
    text = render_text(spec, _terms(
        reference_terms, company_name="Acme Widgets, Inc.", company_short_name="Acme",
        executive_first_name="Ana", executive_full_name="Ana M. Ortiz",
        executive_positions="Chief Financial Officer", inducement_title="Chief Financial Officer",
        chair_name="Lee Chan", chair_title="Chair of the Board", letter_date="2024-03-05"))
    lines = text.splitlines()
    assert lines[0] == "March 5, 2024"
    assert "Dear Ana," in lines
    assert "ACME WIDGETS, INC." in lines
    assert lines[-1] == "Ana M. Ortiz"
    assert "this ___ day of March, 2024" in lines
    assert "Lee Chan" in lines and "Chair of the Board" in lines
    assert "consulting services to Acme as outlined" in text


@pytest.mark.parametrize("grants", [[], ["2006-06-12"], ["2006-01-01", "2006-02-01",
                                                           "2006-03-01"]])
@pytest.mark.parametrize("repurchase", [True, False])
def test_no_stray_space_blank_paragraph_or_tag(spec, reference_terms, grants, repurchase):
    data = render_docx(spec, validate_terms(spec, _terms(
        reference_terms, cancelled_option_grant_dates=grants,
        repurchase_unvested_restricted=repurchase)))
    text = docx_text(data)
    for bad in ("  ", " .", " ,", "{{", "}}", "{%", "%}", ",,", "..", ", .", "\n "):
        assert bad not in text, repr(bad)
    paragraphs = text.split("\n")
    assert len(paragraphs) == len(docx_text(render_docx(spec, validate_terms(
        spec, reference_terms))).split("\n"))


def test_markup_characters_come_out_intact(spec, reference_terms):
    name = "O'Brien & Sons <Holdings> \"Ltd\" — Ünïcødé 東京 שלום"
    data = render_docx(spec, validate_terms(spec, _terms(reference_terms, company_name=name)))
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None
    text = docx_text(data)
    assert f"{name} (the \u201cCompany\u201d)" in text
    assert name.upper() in text
    # Every paragraph survived: an unescaped '<' would have truncated the document.
    assert text.splitlines()[-1] == reference_terms["executive_full_name"]
