"""The terms form: generated from the schema, checked by the domain, errors beside their fields.

Every validation error path of the schema is posted through the form: the page answers 422,
names the problem beside the field it concerns (marked aria-invalid and described by the
message), lists it in the summary, keeps every value typed, and stores nothing.
"""

from __future__ import annotations

import lxml.html
import pytest
from sqlalchemy import func, select

from web.database import get_db
from web.testing import csrf_token, terms_form_data
from workflow.models import Letter


def _letters(app) -> int:
    with app.app_context(), get_db().transaction() as session:
        return session.scalar(select(func.count()).select_from(Letter))


def _field(html: str, key: str):
    """Return the element wrapping a field of the form."""
    found = lxml.html.fromstring(html).xpath(f'//*[@id="field-{key}"]')
    assert found, f"no field {key}"
    return found[0]


def _inputs(html: str, key: str):
    return lxml.html.fromstring(html).xpath(
        f'//form[@data-terms-form]//*[@name="{key}"][not(ancestor::template)]')


@pytest.fixture()
def form_page(staff):
    return staff.get("/letters/new?template=separation_letter").text


def test_form_has_a_section_per_group_in_order(staff, spec):
    page = staff.get("/letters/new?template=separation_letter")
    assert page.status_code == 200
    tree = lxml.html.fromstring(page.text)
    titles = [h.text_content() for h in tree.xpath("//section[@class='form-section']/h2")]
    assert titles == ["Parties", "Dates", "Consulting", "Equity", "Covenants", "Signatures"]
    for key in spec.fields:
        assert tree.xpath(f'//section//*[@id="field-{key}"]'), key


def test_each_type_gets_its_input(form_page, spec):
    tree = lxml.html.fromstring(form_page)

    def one(key):
        (element,) = tree.xpath(f'//input[@id="term-{key}"]')
        return element

    assert one("letter_date").get("type") == "date"
    assert one("company_name").get("type") == "text"
    assert one("company_name").get("maxlength") == "200"
    months = one("consulting_months")
    assert (months.get("type"), months.get("step"), months.get("min"), months.get("max")) == \
        ("number", "1", "1", "120")
    rate = one("hourly_rate")
    assert (rate.get("type"), rate.get("step"), rate.get("inputmode")) == \
        ("number", "0.01", "decimal")
    radios = tree.xpath('//input[@name="repurchase_unvested_restricted"]')
    assert [(r.get("type"), r.get("value")) for r in radios] == \
        [("radio", "true"), ("radio", "false")]
    assert tree.xpath('//fieldset[@id="field-repurchase_unvested_restricted"]/legend')
    grants = tree.xpath('//input[@name="cancelled_option_grant_dates"][not(ancestor::template)]')
    assert [g.get("type") for g in grants] == ["date"]
    assert tree.xpath('//button[@name="_add" and @value="cancelled_option_grant_dates"]')


def test_every_input_has_a_label_and_help_is_described(form_page, spec):
    tree = lxml.html.fromstring(form_page)
    for element in tree.xpath("//form[@data-terms-form]//input[@type!='hidden']"
                              "[not(ancestor::template)]"):
        element_id = element.get("id")
        assert element_id and tree.xpath(f'//label[@for="{element_id}"]'), element_id
    for key, f in spec.fields.items():
        if f.help and f.type not in ("boolean", "date_list"):
            (element,) = tree.xpath(f'//input[@id="term-{key}"]')
            assert f"term-{key}-help" in element.get("aria-describedby", ""), key
            assert tree.xpath(f'//*[@id="term-{key}-help"]')[0].text_content() == f.help


def test_required_fields_are_marked_required(form_page, spec):
    tree = lxml.html.fromstring(form_page)
    for key, f in spec.fields.items():
        if f.type in ("text", "date", "integer", "decimal"):
            (element,) = tree.xpath(f'//input[@id="term-{key}"]')
            assert (element.get("required") is not None) == f.required, key


def test_derived_fields_say_so_and_carry_their_derivation(form_page):
    tree = lxml.html.fromstring(form_page)
    (effective,) = tree.xpath('//input[@id="term-effective_date"]')
    assert effective.get("data-derive") == "next_day"
    assert effective.get("data-derive-from") == "resignation_date"
    (deadline,) = tree.xpath('//input[@id="term-option_exercise_deadline"]')
    assert deadline.get("data-derive-from") == "resignation_date consulting_months"
    assert "computed when left empty" in _field(form_page, "effective_date").text_content()


def test_reference_letter_fills_every_term(staff, reference_terms):
    page = staff.get("/letters/new?template=separation_letter&start=reference").text
    for key, value in reference_terms.items():
        inputs = _inputs(page, key)
        if isinstance(value, bool):
            checked = [i.get("value") for i in inputs if i.get("checked") is not None]
            assert checked == ["true" if value else "false"], key
        elif isinstance(value, list):
            assert [i.get("value") for i in inputs] == value, key
        else:
            assert [i.get("value") for i in inputs] == [str(value)], key


def test_each_error_shows_beside_its_field_with_values_kept(app, staff, form_page, spec,
                                                            reference_terms, bad_value):
    key, value, message = bad_value
    terms = {**reference_terms, key: value}
    data = terms_form_data(terms, form_page)
    if value == "" and isinstance(reference_terms[key], bool):
        del data[key]
    response = staff.post("/letters/new", data=data)
    assert response.status_code == 422
    field = _field(response.text, key)
    (error,) = field.xpath('.//*[@class="field__error"]')
    joiner = ": " if spec.fields[key].type == "date_list" else " "
    assert error.text_content() == f"Error: {spec.fields[key].label}{joiner}{message}"
    assert error.get("id") == f"term-{key}-error"
    for element in field.xpath(".//input[not(ancestor::template)]"):
        assert element.get("aria-invalid") == "true"
    described = field.get("aria-describedby") if field.tag == "fieldset" else \
        field.xpath(".//input")[0].get("aria-describedby")
    assert f"term-{key}-error" in described
    # Listed in the summary, linking to the field.
    summary = lxml.html.fromstring(response.text).xpath('//*[@id="error-summary"]')[0]
    assert message in summary.text_content()
    # Every other value is kept as typed.
    for other, typed in terms.items():
        if other == key:
            continue
        inputs = _inputs(response.text, other)
        if isinstance(typed, bool):
            assert [i.get("value") for i in inputs if i.get("checked") is not None] == \
                ["true" if typed else "false"], other
        elif isinstance(typed, list):
            assert [i.get("value") for i in inputs] == typed, other
        else:
            assert [i.get("value") for i in inputs] == [str(typed)], other
    assert _letters(app) == 0


def test_the_bad_value_itself_is_kept(staff, form_page, reference_terms):
    data = terms_form_data({**reference_terms, "vested_option_shares": "2500000",
                            "chair_name": "Eliot <b>Protsch</b> & \"Co\""}, form_page)
    response = staff.post("/letters/new", data=data)
    assert response.status_code == 422
    assert [i.get("value") for i in _inputs(response.text, "vested_option_shares")] == \
        ["2500000"]
    # Markup typed into a field comes back as text, escaped, never as markup.
    assert [i.get("value") for i in _inputs(response.text, "chair_name")] == \
        ['Eliot <b>Protsch</b> & "Co"']
    assert "<b>Protsch</b>" not in response.text


def test_several_errors_at_once_are_all_listed(staff, form_page, reference_terms):
    data = terms_form_data({**reference_terms, "letter_date": "", "hourly_rate": "1.001",
                            "vested_option_shares": "9000000"}, form_page)
    response = staff.post("/letters/new", data=data)
    assert response.status_code == 422
    assert "There are 3 problems with the terms" in response.text
    summary = lxml.html.fromstring(response.text).xpath('//*[@id="error-summary"]//a')
    assert [a.get("href") for a in summary] == ["#term-letter_date", "#term-hourly_rate",
                                               "#term-vested_option_shares"]


def test_empty_form_names_every_required_field(app, staff, form_page, spec):
    response = staff.post("/letters/new", data={"csrf_token": csrf_token(form_page),
                                                "template": "separation_letter"})
    assert response.status_code == 422
    for key, f in spec.fields.items():
        if f.required:
            assert f"{f.label} is required" in _field(response.text, key).text_content()
    assert _letters(app) == 0


def test_post_without_csrf_token_stores_nothing(app, staff, form_page, reference_terms):
    data = terms_form_data(reference_terms, form_page)
    del data["csrf_token"]
    response = staff.post("/letters/new", data=data)
    assert response.status_code == 400
    assert "security token" in response.text
    assert _letters(app) == 0


def test_post_with_a_forged_csrf_token_stores_nothing(app, staff, form_page, reference_terms):
    data = terms_form_data(reference_terms, form_page, csrf_token="forged.token.value")
    assert staff.post("/letters/new", data=data).status_code == 400
    assert _letters(app) == 0


def test_add_another_date_without_javascript(app, staff, form_page, reference_terms):
    data = terms_form_data(reference_terms, form_page, _add="cancelled_option_grant_dates")
    response = staff.post("/letters/new", data=data)
    assert response.status_code == 200
    boxes = _inputs(response.text, "cancelled_option_grant_dates")
    assert [b.get("value") for b in boxes] == ["2006-06-12", "2006-06-22", ""]
    assert boxes[2].get("id") == "term-cancelled_option_grant_dates-3"
    assert boxes[2].get("autofocus") is not None
    assert "problem" not in response.text  # not validated yet
    assert _letters(app) == 0


def test_remove_a_date_without_javascript(staff, form_page, reference_terms):
    data = terms_form_data(reference_terms, form_page, _remove="cancelled_option_grant_dates:1")
    response = staff.post("/letters/new", data=data)
    assert response.status_code == 200
    assert [b.get("value") for b in _inputs(response.text, "cancelled_option_grant_dates")] == \
        ["2006-06-22"]


def test_removing_the_last_date_leaves_one_empty_box(staff, form_page, reference_terms):
    data = terms_form_data({**reference_terms, "cancelled_option_grant_dates": ["2006-06-12"]},
                           form_page, _remove="cancelled_option_grant_dates:1")
    response = staff.post("/letters/new", data=data)
    assert [b.get("value") for b in _inputs(response.text, "cancelled_option_grant_dates")] == [""]


def test_empty_date_boxes_are_ignored_on_saving(app, staff, form_page, reference_terms):
    data = terms_form_data(reference_terms, form_page)
    data["cancelled_option_grant_dates"] = ["", "2006-06-22", ""]
    response = staff.post("/letters/new", data=data)
    assert response.status_code == 302
    letter = staff.get(response.headers["Location"]).text
    assert "June 22, 2006" in letter and "June 12, 2006" not in letter


def test_no_grants_at_all_is_valid(staff, form_page, reference_terms):
    data = terms_form_data({**reference_terms, "cancelled_option_grant_dates": [""]}, form_page)
    response = staff.post("/letters/new", data=data)
    assert response.status_code == 302
    letter = staff.get(response.headers["Location"]).text
    assert "<dt>Cancelled option grants</dt><dd>None</dd>" in letter


def test_derived_fields_left_empty_are_computed(staff, form_page, reference_terms):
    terms = {**reference_terms, "effective_date": "", "option_exercise_deadline": "",
             "service_years": "", "resignation_date": "2006-09-30", "consulting_months": "18"}
    response = staff.post("/letters/new", data=terms_form_data(terms, form_page))
    assert response.status_code == 302
    letter = staff.get(response.headers["Location"]).text
    assert "<dt>Agreement effective date</dt><dd>October 1, 2006</dd>" in letter
    assert "<dt>Option exercise deadline</dt><dd>March 30, 2008</dd>" in letter
    assert "<dt>Years of service</dt><dd>3</dd>" in letter


def test_derived_fields_may_be_overridden(staff, form_page, reference_terms):
    terms = {**reference_terms, "effective_date": "2006-08-15"}
    response = staff.post("/letters/new", data=terms_form_data(terms, form_page))
    assert response.status_code == 302
    letter = staff.get(response.headers["Location"]).text
    assert "<dt>Agreement effective date</dt><dd>August 15, 2006</dd>" in letter


def test_unknown_template_is_a_404_page(staff):
    response = staff.get("/letters/new?template=no_such_template")
    assert response.status_code == 404
    assert "There is no template named &#39;no_such_template&#39;." in response.text
    assert "<html" in response.text


def test_oversized_form_is_refused_with_413(app, staff, form_page, reference_terms):
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024
    data = terms_form_data({**reference_terms, "chair_name": "x" * 100_000}, form_page)
    response = staff.post("/letters/new", data=data)
    assert response.status_code == 413
    assert "The request is too large" in response.text
    assert _letters(app) == 0
