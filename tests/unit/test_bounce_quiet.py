"""Non-bounces stay quiet (docs/bounces.md, "Non-bounces"): read receipts, auto-replies,
challenge-response requests, success DSNs and delay warnings yield no failed recipient.

Samples written here from RFC 3464 / 3834 / 8098 and the MTAs' own warning templates.
"""

from __future__ import annotations

import pytest

from sidecar.bounce.parse import parse_message
from sidecar.bounce.parse.results import Kind, ParsedMessage

_NOT_FAILED = {"delivered", "vacation", "feedback"}


def _failed(parsed: ParsedMessage) -> list[str]:
    return [r.address for r in parsed.recipients if r.reason not in _NOT_FAILED and r.action != "delayed"]


def _mdn(report_type_param: bool = True) -> bytes:
    ctype = 'multipart/report; report-type=disposition-notification; boundary="R"'
    if not report_type_param:
        ctype = 'multipart/report; boundary="R"'
    # some user agents repeat the report's fields in the text part
    echo = "" if report_type_param else "Final-Recipient: rfc822;kim@example.org\nDisposition: deleted\n"
    return (
        "From: Kim <kim@example.org>\nTo: sender@example.com\nSubject: Not read: quarterly report\n"
        f"MIME-Version: 1.0\nContent-Type: {ctype}\n\n"
        "--R\nContent-Type: text/plain\n\nYour message to kim@example.org was deleted without being read.\n"
        f"{echo}"
        "--R\nContent-Type: message/disposition-notification\n\n"
        "Reporting-UA: mua.example.org; Example Mail\nOriginal-Recipient: rfc822;kim@example.org\n"
        "Final-Recipient: rfc822;kim@example.org\nOriginal-Message-ID: <1@example.com>\n"
        "Disposition: manual-action/MDN-sent-manually; displayed\n"
        "--R--\n"
    ).encode()


@pytest.mark.parametrize("param", [True, False])
def test_read_receipt_is_not_a_bounce(param: bool) -> None:
    parsed = parse_message(_mdn(param))
    assert parsed.kind is Kind.NOT_BOUNCE and parsed.recipients == []


def _dsn(action: str, status: str) -> bytes:
    return (
        "From: MAILER-DAEMON@mx.example.net\nTo: sender@example.com\nSubject: Delivery Status Notification\n"
        'MIME-Version: 1.0\nContent-Type: multipart/report; report-type=delivery-status; boundary="B"\n\n'
        "--B\nContent-Type: text/plain\n\nDelivery report.\n"
        "--B\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.net\n\n"
        f"Final-Recipient: rfc822; lee@example.org\nAction: {action}\nStatus: {status}\n"
        "Diagnostic-Code: smtp; 250 2.0.0 OK\n"
        "--B--\n"
    ).encode()


@pytest.mark.parametrize("action", ["delivered", "relayed", "expanded"])
def test_success_dsn_has_no_failed_recipient(action: str) -> None:
    parsed = parse_message(_dsn(action, "2.0.0"))
    assert parsed.kind is Kind.DELIVERED
    assert _failed(parsed) == [] and [r.address for r in parsed.recipients] == ["lee@example.org"]


def test_delayed_dsn_is_a_delay_never_hard() -> None:
    parsed = parse_message(_dsn("delayed", "4.4.7"))
    assert parsed.kind is Kind.DELAY
    assert [(r.address, r.action) for r in parsed.recipients] == [("lee@example.org", "delayed")]
    assert all(r.hard is not True for r in parsed.recipients)


_EXIM_WARNING = (
    "From: Mail Delivery System <Mailer-Daemon@mx.example.net>\nTo: sender@example.com\n"
    "Subject: Warning: message 1tXyZa-000123-AB delayed 24 hours\nAuto-Submitted: auto-replied\n"
    "Content-Type: text/plain\n\n"
    "This message was created automatically by mail delivery software.\n"
    "A message that you sent has not yet been delivered to one or more of its\n"
    "recipients after more than 24 hours on the queue on mx.example.net.\n\n"
    "The message identifier is:     1tXyZa-000123-AB\n\n"
    "The address to which the message has not yet been delivered is:\n\n"
    "  lee@example.org\n    Delay reason: SMTP error from remote mail server after RCPT TO:<lee@example.org>:\n"
    "    550 5.1.1 <lee@example.org>: Recipient address rejected: User unknown\n\n"
    "No action is required on your part. Delivery attempts will continue for\nsome time.\n"
)
_POSTFIX_WARNING = (
    "From: MAILER-DAEMON@mx.example.net (Mail Delivery System)\nTo: sender@example.com\n"
    "Subject: Delayed Mail (still being retried)\nContent-Type: text/plain\n\n"
    "This is the mail system at host mx.example.net.\n\n"
    "####################################################################\n"
    "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #\n"
    "####################################################################\n\n"
    "Your message could not be delivered for more than 4 hour(s).\n"
    "It will be retried until it is 5 day(s) old.\n\n"
    "<lee@example.org>: host mx.example.org[192.0.2.7] said: 550 5.1.1 user unknown\n"
    "    (in reply to RCPT TO command)\n"
)
_SENDMAIL_WARNING = (
    "From: Mail Delivery Subsystem <MAILER-DAEMON@mx.example.net>\nTo: sender@example.com\n"
    "Subject: Warning: could not send message for past 4 hours\nContent-Type: text/plain\n\n"
    "    **********************************************\n"
    "    **      THIS IS A WARNING MESSAGE ONLY      **\n"
    "    **  YOU DO NOT NEED TO RESEND YOUR MESSAGE  **\n"
    "    **********************************************\n\n"
    "The original message was received at Mon, 30 Nov 2026 10:00:00 GMT\n\n"
    "   ----- Transcript of session follows -----\n<lee@example.org>... Deferred: Connection timed out\n"
    "Warning: message still undelivered after 4 hours\nWill keep trying until message is 5 days old\n"
)


@pytest.mark.parametrize("text", [_EXIM_WARNING, _POSTFIX_WARNING, _SENDMAIL_WARNING])
def test_text_delay_warnings_are_delays(text: str) -> None:
    parsed = parse_message(text.encode())
    assert parsed.kind is Kind.DELAY
    assert [r.address for r in parsed.recipients] == ["lee@example.org"]
    assert all(r.action == "delayed" and r.hard is False for r in parsed.recipients)


def _reply(headers: str, subject: str, body: str, sender: str = "Kim <kim@example.org>") -> bytes:
    return (f"From: {sender}\nTo: sender@example.com\nSubject: {subject}\n{headers}\n{body}").encode()


_BOUNCY_BODY = "Your message could not be delivered to me this week; delivery has failed, user unknown.\n"


@pytest.mark.parametrize(
    ("headers", "subject"),
    [
        ("X-Autoreply: yes\n", "Re: Mail delivery failed"),
        ("X-Autorespond: yes\n", "Undeliverable: your order"),
        ("Precedence: auto_reply\n", "Returned mail: see transcript"),
        ("Auto-Submitted: auto-replied\n", "Automatic reply: Delivery failure"),
        ("X-Auto-Response-Suppress: All\n", "Automatische Antwort: Returned mail"),
        ("", "Out of Office: Undelivered Mail"),
    ],
)
def test_auto_replies_name_no_failed_recipient(headers: str, subject: str) -> None:
    parsed = parse_message(_reply(headers, subject, _BOUNCY_BODY))
    assert parsed.kind is Kind.AUTO_REPLY
    assert _failed(parsed) == []
    assert [(r.address, r.address_source) for r in parsed.recipients] == [("kim@example.org", "header:from")]


def test_auto_response_suppress_alone_is_only_a_hint() -> None:
    parsed = parse_message(_reply("X-Auto-Response-Suppress: All\n", "quarterly report", "See you then.\n"))
    assert parsed.kind is Kind.NOT_BOUNCE


def test_a_daemon_bounce_marked_auto_replied_is_still_a_bounce() -> None:
    raw = (
        b"From: Mail Delivery System <Mailer-Daemon@mx.example.net>\nTo: sender@example.com\n"
        b"Subject: Mail delivery failed: returning message to sender\nAuto-Submitted: auto-replied\n"
        b"X-Failed-Recipients: lee@example.org\nContent-Type: text/plain\n\n"
        b"This message was created automatically by mail delivery software.\n\n"
        b"A message that you sent could not be delivered to one or more of its\n"
        b"recipients. This is a permanent error. The following address(es) failed:\n\n"
        b"  lee@example.org\n    SMTP error from remote mail server after RCPT TO:<lee@example.org>:\n"
        b"    550 5.1.1 <lee@example.org>: Recipient address rejected: User unknown\n"
    )
    parsed = parse_message(raw)
    assert parsed.kind is Kind.BOUNCE and _failed(parsed) == ["lee@example.org"]


@pytest.mark.parametrize(
    ("headers", "subject", "body"),
    [
        (
            "",
            "Please confirm your message",
            "Your message to kim@example.org could not be delivered yet.\n"
            "Please confirm that you are a real person: reply to this message.\n",
        ),
        (
            "X-BoxTrapper-Queue: 1\n",
            "Your email requires verification",
            "Your message to kim@example.org could not be delivered until you verify it.\n",
        ),
        (
            "",
            "Undelivered: awaiting your confirmation",
            "I use Spam Arrest. Your message to kim@example.org is being held pending verification.\n"
            "Please verify your message by clicking the link; it could not be delivered until then.\n",
        ),
    ],
)
def test_challenge_response_requests_are_not_bounces(headers: str, subject: str, body: str) -> None:
    # a challenge comes from the challenge system, not from the protected mailbox
    parsed = parse_message(_reply(headers, subject, body, sender="verify-4711@challenge.example.net"))
    assert parsed.kind is Kind.NOT_BOUNCE and parsed.recipients == []


def test_tmda_by_its_delivery_agent_header() -> None:
    raw = _reply(
        "X-Delivery-Agent: TMDA/1.1.12 (Ladyburn)\n",
        "Re: quarterly report",
        "Your message to kim@example.org could not be delivered until you confirm it.\n",
        sender="kim-confirm+1234.abcd@example.org",
    )
    assert parse_message(raw).recipients == []


def test_forwarding_notice_is_not_a_bounce() -> None:
    raw = _reply(
        "",
        "Undeliverable Message",
        "kim@example.org has a new e-mail address. The new address is kim@example.net and the\n"
        "mail system has automatically forwarded your message.\n",
        sender="Postmaster <postmaster@example.org>",
    )
    assert parse_message(raw).recipients == []


def test_a_short_absence_note_without_markers_is_an_auto_reply() -> None:
    raw = _reply("", "quarterly report", "Thank you for your e-mail. I am out of the office until 7 December.\n")
    parsed = parse_message(raw)
    assert parsed.kind is Kind.AUTO_REPLY and _failed(parsed) == []


def test_a_persons_reply_with_bounce_words_is_not_a_bounce() -> None:
    raw = _reply(
        "In-Reply-To: <1@example.com>\n",
        "Re: your order was rejected",
        "Hi, the parcel could not be delivered to our office; please ask ops@example.org.\n",
    )
    parsed = parse_message(raw)
    assert parsed.kind is Kind.NOT_BOUNCE and parsed.recipients == []


@pytest.mark.parametrize(
    "warning",
    [
        "Your message to:\n\n  lee@example.org\n\nThis is just a warning, you do not need to take any action.\n",
        "Delivery to the following recipient has been delayed:\n\n  lee@example.org\n\nMessage will be retried.\n",
        'This is an advisory-only email. Delivery of your message to "lee@example.org" has been postponed.\n',
    ],
)
def test_warning_wordings_are_delays(warning: str) -> None:
    raw = (
        "From: MAILER-DAEMON@mx.example.net\nTo: sender@example.com\nSubject: Mail delivery notice\n"
        f"Content-Type: text/plain\n\n{warning}"
    ).encode()
    parsed = parse_message(raw)
    assert parsed.kind is Kind.DELAY and [r.address for r in parsed.recipients] == ["lee@example.org"]
    assert all(r.action == "delayed" and r.hard is False for r in parsed.recipients)


def test_a_dsn_block_without_action_in_a_warning_is_delayed() -> None:
    raw = (
        b"From: MAILER-DAEMON@mx.example.net\nTo: sender@example.com\nSubject: Delivery Status Notification\n"
        b'MIME-Version: 1.0\nContent-Type: multipart/report; report-type=delivery-status; boundary="B"\n\n'
        b"--B\nContent-Type: text/plain\n\nTHIS IS A WARNING MESSAGE ONLY.\nYOU DO NOT NEED TO RESEND YOUR MESSAGE.\n"
        b"--B\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.net\n\n"
        b"Final-Recipient: rfc822; lee@example.org\nStatus: 5.1.1\n"
        b"--B--\n"
    )
    parsed = parse_message(raw)
    assert parsed.kind is Kind.DELAY
    assert [(r.action, r.hard) for r in parsed.recipients] == [("delayed", False)]
