"""Notices on the letter page and in the API, through a real SMTP server on loopback: the
reminders chosen when sending, "Remind now" (202, then 429 for an hour), every email with
what the mail server answered, and a refused address shown with its answer."""

from __future__ import annotations

import datetime as dt
import email.policy
import re

import pytest
from lxml import html as lxml_html
from mailing import RefusingInbox, recipient, text_of, use_mail
from serving import free_port
from sqlalchemy import select, update

from web.database import get_db
from web.testing import csrf_token
from workflow.models import Notice

SIGNERS = [{"role": "company", "name": "Eliot Protsch", "email": "eliot@capstone.test"},
           {"role": "executive", "name": "John R. Tucker", "email": "nobody@capstone.test"}]
TITLE = "Separation letter of John R. Tucker, Capstone Turbine Corporation"


@pytest.fixture()
def inbox(app):
    """The app's mail goes to a real SMTP server that refuses nobody@capstone.test."""
    from aiosmtpd.controller import Controller

    inbox = RefusingInbox("nobody@capstone.test")
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    use_mail(app, controller.port, SMTP_FROM="legal@capstone.test")
    yield inbox
    controller.stop()


def send_form(page_html: str, **changes: str) -> dict[str, str]:
    tree = lxml_html.fromstring(page_html)
    (form,) = tree.xpath("//form[contains(@class, 'send-form')]")
    return {**dict(form.form_values()), **changes}


def envelope(client, api, letter_id):
    return client.get(f"/api/letters/{letter_id}/envelope", headers=api).json


def remind(client, api, letter_id, counterpart_id):
    return client.post(f"/api/letters/{letter_id}/counterparts/{counterpart_id}/remind",
                       headers=api)


def test_the_send_form_sets_the_reminders_and_the_page_shows_each_email(
        app, staff, client, api, make_letter, reference_terms, inbox):
    letter_id = make_letter(reference_terms)
    page = staff.get(f"/letters/{letter_id}")
    values = send_form(page.text)
    assert (values["reminder_count"], values["reminder_first_after_days"],
            values["reminder_every_days"]) == ("3", "3", "3")
    # A mistake is shown beside the reminders, and nothing is sent.
    refused = staff.post(f"/letters/{letter_id}/envelope", data=send_form(
        page.text, reminder_count="11"))
    assert refused.status_code == 422
    assert "How many: give a whole number from 0 to 10." in refused.text
    assert inbox.messages == []
    response = staff.post(f"/letters/{letter_id}/envelope", data=send_form(
        page.text, **{"signers-0-email": "eliot@capstone.test",
                      "signers-1-email": "nobody@capstone.test",
                      "reminder_count": "2", "reminder_first_after_days": "1",
                      "reminder_every_days": "5"}))
    assert response.status_code == 303
    shown = staff.get(response.headers["Location"])
    assert "The mail server accepted the emails to Eliot Protsch" in shown.text
    # The refused address: on the page, with the server's answer, and not tried again.
    assert "The mail server did not take every signing email" in shown.text
    answer = "550 5.1.1 &lt;nobody@capstone.test&gt;: Recipient address rejected: User unknown"
    assert answer in shown.text
    tree = lxml_html.fromstring(shown.text)
    (panel,) = tree.xpath("//section[@id='notices']")
    rows = [" ".join(row.text_content().split()) for row in panel.xpath(".//tbody/tr")]
    assert len(rows) == 2
    refused_row = next(r for r in rows if "nobody@capstone.test" in r)
    assert "Invitation to sign" in refused_row and "Failed" in refused_row
    assert "550 5.1.1 <nobody@capstone.test>: Recipient address rejected" in refused_row
    assert "not tried again" in refused_row and refused_row.endswith(" 1")
    sent_row = next(r for r in rows if "eliot@capstone.test" in r)
    assert "Sent accepted by the mail server: 250 2.0.0 Ok: queued as 4F1A" in sent_row
    panel_text = " ".join(panel.text_content().split())
    assert "reminded 1 day after sending, then every 5 days, at most 2 times" in panel_text
    # The API states the same: the settings, each signer's reminders, every notice.
    answer = envelope(client, api, letter_id)
    assert answer["reminders"] == {"count": 2, "first_after_days": 1, "every_days": 5}
    eliot, john = answer["signers"]
    created = dt.datetime.fromisoformat(answer["created_at"])
    assert eliot["reminders_sent"] == 0
    assert abs(dt.datetime.fromisoformat(eliot["next_reminder_at"]) - created
               - dt.timedelta(days=1)) < dt.timedelta(seconds=2)
    assert (eliot["status"], john["status"]) == ("sent", "ready")
    assert sorted((n["to"], n["kind"], n["status"], n["attempts"]) for n in answer["notices"]) == [
        ("eliot@capstone.test", "invitation", "sent", 1),
        ("nobody@capstone.test", "invitation", "failed", 1)]


def test_remind_now_answers_202_then_429_for_an_hour(app, client, api, make_letter,
                                                    reference_terms, inbox):
    letter_id = make_letter(reference_terms)
    sent = client.post(f"/api/letters/{letter_id}/envelope", headers=api, json={
        "signers": SIGNERS, "reminders": 0})
    assert sent.status_code == 201, sent.text
    assert sent.json["emails"]["sent"] == ["Eliot Protsch <eliot@capstone.test>"]
    assert sent.json["emails"]["queued"] == []
    (failed,) = sent.json["emails"]["failed"]
    assert failed["email"] == "nobody@capstone.test" and failed["retrying"] is False
    assert sent.json["reminders"] == {"count": 0, "first_after_days": 3, "every_days": 3}
    assert [s["next_reminder_at"] for s in sent.json["signers"]] == [None, None]
    eliot = sent.json["signers"][0]
    token = eliot["link"].rsplit("/", 1)[1]
    first = remind(client, api, letter_id, eliot["counterpart_id"])
    assert first.status_code == 202, first.text
    assert (first.json["status"], first.json["to"], first.json["reminders_sent"]) == (
        "sent", "eliot@capstone.test", 1)
    (reminder,) = [m for m in inbox.messages if m["Subject"] == f"Reminder: please sign {TITLE}"]
    assert recipient(reminder) == "eliot@capstone.test"
    assert f"http://127.0.0.1:5000/sign/{token}" in text_of(reminder)
    again = remind(client, api, letter_id, eliot["counterpart_id"])
    assert again.status_code == 429
    allowed_at = dt.datetime.fromisoformat(again.json["allowed_at"])
    assert dt.timedelta(minutes=59) < allowed_at - dt.datetime.now(dt.UTC) <= dt.timedelta(
        hours=1)
    assert 3500 < int(again.headers["Retry-After"]) <= 3601
    assert "less than an hour ago" in again.json["error"]
    assert len([m for m in inbox.messages if m["Subject"].startswith("Reminder")]) == 1
    # An hour later it is allowed again.
    with app.app_context(), get_db().transaction() as session:
        session.execute(update(Notice).where(Notice.counterpart_id == eliot["counterpart_id"],
                                             Notice.kind == "reminder")
                        .values(created_at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=61)))
    assert remind(client, api, letter_id, eliot["counterpart_id"]).status_code == 202
    # Once signed, no reminder: refused, and none is made.
    assert client.post(f"/api/sign/{token}", json={
        "consent": True, "signature": {"type": "typed", "text": "Eliot"}}).status_code == 200
    signed = remind(client, api, letter_id, eliot["counterpart_id"])
    assert signed.status_code == 409 and "only a signer still to sign" in signed.json["error"]
    with app.app_context(), get_db().transaction() as session:
        assert len(session.scalars(select(Notice).where(Notice.kind == "reminder")).all()) == 2


def test_the_page_reminds_a_signer_and_hides_the_button_for_an_hour(
        app, staff, client, api, make_letter, reference_terms, inbox):
    letter_id = make_letter(reference_terms)
    sent = client.post(f"/api/letters/{letter_id}/envelope", headers=api, json={
        "signers": [SIGNERS[0], {**SIGNERS[1], "email": "jt@home.test"}]})
    assert sent.status_code == 201
    page = staff.get(f"/letters/{letter_id}")
    buttons = re.findall(r'action="(/letters/\d+/counterparts/(\d+)/remind)"', page.text)
    assert [cid for _, cid in buttons] == [str(s["counterpart_id"])
                                          for s in sent.json["signers"]]
    reminded = staff.post(buttons[1][0], data={"csrf_token": csrf_token(page.text)})
    assert reminded.status_code == 303
    assert reminded.headers["Location"] == f"/letters/{letter_id}#notices"
    shown = staff.get(reminded.headers["Location"])
    assert "A reminder was emailed to jt@home.test: the mail server accepted it." in shown.text
    assert [recipient(m) for m in inbox.messages if m["Subject"].startswith("Reminder")] == [
        "jt@home.test"]
    # John's button waits for the hour; Eliot's stays.
    assert re.findall(r'/counterparts/(\d+)/remind"', shown.text) == [buttons[0][1]]
    assert "reminded within the hour; again after" in shown.text
    again = staff.post(buttons[1][0], data={"csrf_token": csrf_token(shown.text)})
    assert "less than an hour ago" in staff.get(again.headers["Location"]).text
    # The refused second reminder made no notice.
    with app.app_context(), get_db().transaction() as session:
        assert len(session.scalars(select(Notice).where(Notice.kind == "reminder")).all()) == 1


def test_bad_reminder_settings_are_refused_by_the_api(client, api, make_letter,
                                                      reference_terms, inbox):
    letter_id = make_letter(reference_terms)
    for reminders, field in ((11, "reminders"), ({"every_days": 0}, "reminders.every_days"),
                             ("often", "reminders")):
        answer = client.post(f"/api/letters/{letter_id}/envelope", headers=api, json={
            "signers": SIGNERS, "reminders": reminders})
        assert answer.status_code == 400 and answer.json["error"].startswith(field + ":")
    assert inbox.messages == []


def test_no_reminder_button_without_a_mail_server(staff, client, api, make_letter,
                                                  reference_terms):
    letter_id = make_letter(reference_terms)
    client.post(f"/api/letters/{letter_id}/envelope", headers=api, json={"signers": SIGNERS})
    page = staff.get(f"/letters/{letter_id}")
    assert "/remind" not in page.text
    assert "Outgoing mail is not set up on this server" in page.text
    eliot = envelope(client, api, letter_id)["signers"][0]
    refused = remind(client, api, letter_id, eliot["counterpart_id"])
    assert refused.status_code == 409 and "not set up" in refused.json["error"]


def test_the_completion_email_reaches_every_signer_and_the_sender_once(
        app, client, api, make_letter, reference_terms, inbox):
    letter_id = make_letter(reference_terms)
    sent = client.post(f"/api/letters/{letter_id}/envelope", headers=api, json={
        "signers": [SIGNERS[0], {**SIGNERS[1], "email": "jt@home.test"}]})
    for signer in sent.json["signers"]:
        token = signer["link"].rsplit("/", 1)[1]
        assert client.post(f"/api/sign/{token}", json={
            "consent": True, "signature": {"type": "typed", "text": "Signed"}}).status_code == 200
    executed = client.post(f"/api/letters/{letter_id}/executed.pdf", headers=api)
    assert executed.status_code == 200
    done = [m for m in inbox.messages if m["Subject"] == f"Fully executed: {TITLE}"]
    assert sorted(recipient(m) for m in done) == [
        "counsel@example.com", "eliot@capstone.test", "jt@home.test"]
    for message in done:
        reparsed = email.message_from_bytes(message.as_bytes(), policy=email.policy.default)
        (attachment,) = [p for p in reparsed.iter_attachments()]
        assert attachment.get_content() == executed.data


def test_a_retry_still_to_come_reads_next_try_at(app, staff, client, api, make_letter,
                                                 reference_terms, inbox):
    letter_id = make_letter(reference_terms)
    sent = client.post(f"/api/letters/{letter_id}/envelope", headers=api, json={
        "signers": SIGNERS, "reminders": 0})
    assert sent.status_code == 201, sent.text
    # As after a passing failure: the mail server was unreachable, the next try is to come.
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=30)
    with app.app_context(), get_db().transaction() as session:
        session.execute(update(Notice).where(Notice.to_email == "nobody@capstone.test").values(
            answer="the mail server could not be reached", next_attempt_at=later))
    tree = lxml_html.fromstring(staff.get(f"/letters/{letter_id}").text)
    (row,) = [" ".join(r.text_content().split())
              for r in tree.xpath("//section[@id='notices']//tbody/tr")
              if "nobody@capstone.test" in r.text_content()]
    assert "Failed the mail server could not be reached · next try at" in row
    assert "tried again after" not in row and "not tried again" not in row


def test_a_refused_reminder_is_on_the_timeline_and_can_be_tried_again(
        staff, client, api, make_letter, reference_terms, inbox):
    letter_id = make_letter(reference_terms)
    sent = client.post(f"/api/letters/{letter_id}/envelope", headers=api, json={
        "signers": SIGNERS, "reminders": 0})
    assert sent.status_code == 201, sent.text
    john = sent.json["signers"][1]["counterpart_id"]
    refused = remind(client, api, letter_id, john)
    assert refused.status_code == 202
    assert (refused.json["status"], refused.json["reminders_sent"]) == ("failed", 0)
    page = " ".join(lxml_html.fromstring(staff.get(f"/letters/{letter_id}").text)
                    .text_content().split())
    assert ("Reminder to nobody@capstone.test not sent: 550 5.1.1 <nobody@capstone.test>: "
            "Recipient address rejected") in page
    assert "0 reminders so far" in page
    # Refused for good, so staff may try again at once.
    assert remind(client, api, letter_id, john).status_code == 202
