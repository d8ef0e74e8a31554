"""A signer asked to confirm their email: the link opens only after a one-time code emailed to
them is entered in that browser; each step is in the audit record, and the certificate says
how every signer was identified."""

from __future__ import annotations

import re

import pytest
from support import pdftotext

from web.testing import csrf_token

TYPED = {"consent": True, "signature": {"type": "typed", "text": "Eliot Protsch"}}
SIGNERS = [{"role": "company", "name": "Eliot Protsch", "email": "eliot@capstone.test",
            "verify_email": True},
           {"role": "executive", "name": "John R. Tucker"}]


@pytest.fixture()
def mail(smtp_inbox):
    return smtp_inbox


@pytest.fixture()
def app_config(app_config, mail):
    port, _ = mail
    return {**app_config, "SMTP_HOST": "127.0.0.1", "SMTP_PORT": port,
            "SMTP_STARTTLS": False, "SMTP_FROM": "legal@capstone.test"}


@pytest.fixture()
def identified(client, api, make_letter, reference_terms):
    letter_id = make_letter(reference_terms)
    response = client.post(f"/api/letters/{letter_id}/envelope", headers=api,
                           json={"signers": SIGNERS})
    assert response.status_code == 201, response.text
    tokens = [s["link"].rsplit("/", 1)[1] for s in response.json["signers"]]
    assert [s["verify_email"] for s in response.json["signers"]] == [True, False]
    return {"letter_id": letter_id, "tokens": tokens, "answer": response.json}


def codes_in(inbox) -> list[str]:
    """The one-time codes emailed so far, oldest first."""
    found = []
    for message in inbox.messages:
        if message["Subject"].startswith("Your code to open"):
            body = message.get_payload(decode=True).decode()
            found.append(re.search(r"^[ \t]+(\d{6})\s*$", body, re.MULTILINE).group(1))
    return found


def events(client, api, letter_id, *types):
    record = client.get(f"/api/letters/{letter_id}/audit", headers=api).json
    return [e for e in record["events"] if e["type"] in types]


def test_the_link_opens_only_after_the_emailed_code(app, client, api, identified, mail,
                                                    sign_in):
    _, inbox = mail
    letter_id, (company, executive) = identified["letter_id"], identified["tokens"]
    page = client.get(f"/sign/{company}")
    assert page.status_code == 200
    assert "Confirm it is you" in page.text and "e\u2022\u2022\u2022@capstone.test" in page.text
    assert "Sign the letter" not in page.text and "Send me a code" in page.text
    # Nothing of the letter is shown, signed or declined before the code.
    assert client.get(f"/sign/{company}/pages/1.png").status_code == 403
    assert client.get(f"/sign/{company}/letter.pdf").status_code == 403
    token = csrf_token(page.text)
    assert client.post(f"/sign/{company}", data={
        "csrf_token": token, "consent": "yes", "signature_type": "typed",
        "signature_text": "Eliot Protsch"}).status_code == 403
    assert client.post(f"/sign/{company}/decline", data={
        "csrf_token": token, "reason": "no"}).status_code == 403
    assert client.get(f"/api/sign/{company}").status_code == 403
    assert events(client, api, letter_id, "viewed", "signed", "declined") == []

    sent = client.post(f"/sign/{company}/code", data={"csrf_token": token})
    assert sent.status_code == 303
    (code,) = codes_in(inbox)
    message = inbox.messages[-1]
    assert message["To"] == "Eliot Protsch <eliot@capstone.test>"
    form = client.get(f"/sign/{company}")
    assert "A 6-digit code was sent to e\u2022\u2022\u2022@capstone.test" in form.text
    assert "The 6-digit code from the email" in form.text
    wrong = "000000" if code != "000000" else "111111"
    refused = client.post(f"/sign/{company}/code/verify", data={"csrf_token": token,
                                                                "code": wrong})
    assert refused.status_code == 401 and "4 tries left" in refused.text
    # Another browser with the same link is not let in by this one's code.
    other = app.test_client()
    right = client.post(f"/sign/{company}/code/verify", data={"csrf_token": token,
                                                              "code": code})
    assert right.status_code == 303
    assert "Sign the letter" in client.get(f"/sign/{company}").text
    assert client.get(f"/sign/{company}/pages/1.png").status_code == 200
    assert "Confirm it is you" in other.get(f"/sign/{company}").text
    # A code works once.
    again = other.get(f"/sign/{company}")
    replay = other.post(f"/sign/{company}/code/verify", data={
        "csrf_token": csrf_token(again.text), "code": code})
    assert replay.status_code == 401 and "No code is waiting" in replay.text

    assert client.post(f"/api/sign/{company}", json=TYPED).status_code == 200
    last = client.post(f"/api/sign/{executive}", json={
        "consent": True, "signature": {"type": "typed", "text": "John R. Tucker"}})
    assert last.status_code == 200 and last.json["fully_executed"] is True

    record = client.get(f"/api/letters/{letter_id}/audit", headers=api).json
    types = [e["type"] for e in record["events"]]
    assert types.index("code_sent") < types.index("code_failed") < \
        types.index("code_verified") < types.index("signed")
    sent_event = next(e for e in record["events"] if e["type"] == "code_sent")
    assert sent_event["detail"]["email"] == "eliot@capstone.test"
    assert sent_event["actor"] == "Eliot Protsch" and code not in str(record)
    failed = next(e for e in record["events"] if e["type"] == "code_failed")
    assert failed["detail"]["tries_left"] == 4
    verified = next(e for e in record["events"] if e["type"] == "code_verified")
    signers = record["envelope"]["signers"]
    assert signers[0]["identity"]["method"] == "email_code"
    assert signers[0]["identity"]["email"] == "eliot@capstone.test"
    assert signers[0]["identity"]["verified_at"] == verified["at"]
    assert signers[1]["identity"] == {"method": "link"}
    envelope = client.get(f"/api/letters/{letter_id}/envelope", headers=api).json
    assert [s["identity"]["method"] for s in envelope["signers"]] == ["email_code", "link"]

    executed = client.post(f"/api/letters/{letter_id}/executed.pdf", headers=api)
    assert executed.status_code == 200
    certificate = pdftotext(executed.data).split("Certificate of completion", 1)[1]
    entered = verified["at"][:19].replace("T", " ") + " UTC"
    assert ("Identified by link and a one-time code emailed to eliot@capstone.test, "
            f"entered at {entered}") in certificate
    assert "Identified by link only" in certificate
    timeline = sign_in(app.test_client()).get(f"/letters/{letter_id}").text
    for words in ("Identity code emailed", "Wrong identity code", "4 tries left on that code",
                  "Email address confirmed with a code"):
        assert words in timeline, words


def test_five_wrong_codes_use_a_code_up_and_codes_are_not_sent_too_often(
        client, api, identified, mail):
    _, inbox = mail
    letter_id, company = identified["letter_id"], identified["tokens"][0]
    page = client.get(f"/sign/{company}")
    token = csrf_token(page.text)
    assert client.post(f"/sign/{company}/code", data={"csrf_token": token}).status_code == 303
    (code,) = codes_in(inbox)
    wrong = "000000" if code != "000000" else "111111"
    answers = [client.post(f"/sign/{company}/code/verify",
                           data={"csrf_token": token, "code": wrong}) for _ in range(5)]
    assert [a.status_code for a in answers] == [401] * 5
    assert "has had its 5 tries" in answers[-1].text
    late = client.post(f"/sign/{company}/code/verify", data={"csrf_token": token,
                                                             "code": code})
    assert late.status_code == 401 and "No code is waiting" in late.text
    assert "Confirm it is you" in client.get(f"/sign/{company}").text
    soon = client.post(f"/sign/{company}/code", data={"csrf_token": token})
    assert soon.status_code == 429 and "less than a minute ago" in soon.text
    assert len(codes_in(inbox)) == 1
    assert len(events(client, api, letter_id, "code_failed")) == 5
    assert events(client, api, letter_id, "code_verified") == []


def test_the_api_asks_for_the_code_too(client, api, identified, mail):
    _, inbox = mail
    company = identified["tokens"][0]
    refused = client.get(f"/api/sign/{company}")
    assert refused.status_code == 403 and refused.json["code"] == "identity"
    assert client.post(f"/api/sign/{company}", json=TYPED).status_code == 403
    sent = client.post(f"/api/sign/{company}/code")
    assert sent.status_code == 202 and sent.json["sent"] is True
    (code,) = codes_in(inbox)
    wrong = client.post(f"/api/sign/{company}/code/verify", json={"code": "12"})
    assert wrong.status_code == 401 and wrong.json["tries_left"] == 4
    right = client.post(f"/api/sign/{company}/code/verify", json={"code": code})
    assert right.status_code == 200 and right.json["verified"] is True
    signed = client.post(f"/api/sign/{company}", json=TYPED)
    assert signed.status_code == 200 and signed.json["status"] == "signed"
    # A link that needs no code has nothing to send.
    executive = identified["tokens"][1]
    assert client.post(f"/api/sign/{executive}/code").status_code == 409


def test_sending_refuses_the_code_without_an_email_or_without_mail(app_config, make_letter,
                                                                   reference_terms, token):
    from web import create_app

    no_mail = {k: v for k, v in app_config.items() if not k.startswith("SMTP_")}
    app = create_app(no_mail)
    try:
        client = app.test_client()
        api = {"Authorization": f"Bearer {token}"}
        letter_id = make_letter(reference_terms)
        refused = client.post(f"/api/letters/{letter_id}/envelope", headers=api,
                              json={"signers": SIGNERS})
        assert refused.status_code == 400
        assert refused.json["error"].startswith("signers[0].verify_email: outgoing mail is "
                                                "not set up")
        without = [{**SIGNERS[0], "email": None}, SIGNERS[1]]
        refused = client.post(f"/api/letters/{letter_id}/envelope", headers=api,
                              json={"signers": without})
        assert refused.status_code == 400
        assert "needs an email address" in refused.json["error"]
        assert client.get(f"/api/letters/{letter_id}", headers=api).json["status"] == \
            "generated"
    finally:
        app.extensions["counterpart.documents"].close()
        app.extensions["counterpart.db"].dispose()


def test_the_send_form_has_a_code_box_per_signer(client, staff, make_letter, reference_terms,
                                                 mail):
    _, inbox = mail
    letter_id = make_letter(reference_terms)
    page = staff.get(f"/letters/{letter_id}")
    assert page.text.count("Ask for a one-time code emailed to this address") == 2
    form = {"csrf_token": csrf_token(page.text), "link_days": "30",
            "signers-0-role": "company", "signers-0-name": "Eliot Protsch",
            "signers-0-email": "eliot@capstone.test", "signers-0-verify_email": "yes",
            "signers-1-role": "executive", "signers-1-name": "John R. Tucker",
            "signers-1-email": "", "signers-1-verify_email": "yes"}
    refused = staff.post(f"/letters/{letter_id}/envelope", data=form)
    assert refused.status_code in (400, 422)
    assert "needs an email address" in refused.text
    form.pop("signers-1-verify_email")
    sent = staff.post(f"/letters/{letter_id}/envelope", data=form)
    assert sent.status_code in (302, 303), sent.text
    links = re.findall(r"http://localhost/sign/[A-Za-z0-9_\-]{40,}",
                       staff.get(sent.headers["Location"]).text)
    company = links[0].rsplit("/", 1)[1]
    assert "Confirm it is you" in client.get(f"/sign/{company}").text
