"""Which address failed: the message's structure first, prose last (docs/bounces.md, "Which address").

Each sample is written here from the wording of RFC 3464 and the MTAs' own templates; none is a
copy of a collected bounce.
"""

from __future__ import annotations

import pytest

from sidecar.bounce.parse import parse_message
from sidecar.bounce.parse.dsn import address_value
from sidecar.bounce.parse.results import FailedRecipient, Kind


def _dsn(*blocks: str, text: str = "Your message could not be delivered.\n", original: str = "") -> bytes:
    fields = "Reporting-MTA: dns; mx.example.net\n\n" + "\n\n".join(blocks) + "\n"
    parts = [
        "From: MAILER-DAEMON@mx.example.net\nTo: sender@example.com\nSubject: Undelivered Mail Returned to Sender\n"
        'MIME-Version: 1.0\nContent-Type: multipart/report; report-type=delivery-status; boundary="B"\n\n',
        f"--B\nContent-Type: text/plain\n\n{text}\n",
        f"--B\nContent-Type: message/delivery-status\n\n{fields}\n",
    ]
    if original:
        parts.append(f"--B\nContent-Type: text/rfc822-headers\n\n{original}\n")
    return ("".join(parts) + "--B--\n").encode()


def _text_bounce(body: str, sender: str = "Mail Delivery System <MAILER-DAEMON@mx.example.net>") -> bytes:
    return (
        f"From: {sender}\nTo: sender@example.com\nSubject: Mail delivery failed: returning message to sender\n"
        f"Content-Type: text/plain\n\n{body}"
    ).encode()


def _failed(raw: bytes) -> dict[str, FailedRecipient]:
    return {r.address: r for r in parse_message(raw).recipients}


@pytest.mark.parametrize(
    ("value", "address"),
    [
        ("rfc822; <User@Example.COM>", "user@example.com"),
        ("smtp=user@example.com", "user@example.com"),
        ("SMTP:user@example.com", "user@example.com"),
        ("rfc822; smtp=user@example.com", "user@example.com"),
        ("mailto:joe@example.org.", "joe@example.org"),
        ("<joe@example.org>,", "joe@example.org"),
        ("joe@example.org (generated from list)", "joe@example.org"),
        ('rfc822; "john doe"@example.com', '"john doe"@example.com'),
        ('<"a.b"@example.com>', '"a.b"@example.com'),
        ("<@relay.example.net:user@example.com>", "user@example.com"),
        ("Joe <joe@example.org> and <ann@example.org>", "joe@example.org"),
    ],
)
def test_address_value_strips_what_surrounds_an_address(value: str, address: str) -> None:
    assert address_value(value) == address


def test_final_recipient_is_the_failed_address_and_the_original_is_kept() -> None:
    raw = _dsn(
        "Final-Recipient: rfc822; kim@mailhost.example.net\nOriginal-Recipient: rfc822; kim.alias@example.net\n"
        "Action: failed\nStatus: 5.1.1\nDiagnostic-Code: smtp; 550 5.1.1 user unknown"
    )
    (r,) = parse_message(raw).recipients
    assert r.address == "kim@mailhost.example.net"
    assert r.original_recipient == "kim.alias@example.net"
    assert r.address_source == "dsn:final-recipient"


def test_original_recipient_wins_over_a_mailbox_path() -> None:
    raw = _dsn(
        "Final-Recipient: x-local; /var/mail/kim\nOriginal-Recipient: rfc822; kim@example.net\n"
        "Action: failed\nStatus: 5.2.2\nDiagnostic-Code: x-unix; mailbox full"
    )
    (r,) = parse_message(raw).recipients
    assert (r.address, r.address_source) == ("kim@example.net", "dsn:original-recipient")


def test_quoted_local_part_in_a_dsn_is_kept_whole() -> None:
    raw = _dsn('Final-Recipient: rfc822; "john doe"@example.com\nAction: failed\nStatus: 5.1.1')
    assert list(_failed(raw)) == ['"john doe"@example.com']


def test_smtp_prefix_in_a_dsn_field_is_not_part_of_the_address() -> None:
    raw = _dsn("Final-Recipient: rfc822; smtp=pat@example.org\nAction: failed\nStatus: 5.1.1")
    assert list(_failed(raw)) == ["pat@example.org"]


def test_message_ids_are_not_recipients() -> None:
    raw = _text_bounce(
        "This message was created automatically by mail delivery software.\n\n"
        "A message that you sent could not be delivered to one or more of its\n"
        "recipients. This is a permanent error. The following address(es) failed:\n\n"
        "  lee@example.org\n    SMTP error from remote mail server after RCPT TO:<lee@example.org>:\n"
        "    550 5.1.1 No such user\n\n"
        "Message-ID: <20261130101010.4711.abcdef@mail.example.com>\n"
        "Original message ID: <CAF123abc456def@mail.example.com>\n"
    )
    got = _failed(raw)
    assert list(got) == ["lee@example.org"]
    assert got["lee@example.org"].address_source == "text:recipient-line"


def test_quoted_original_headers_and_prose_mailboxes_are_not_recipients() -> None:
    raw = _text_bounce(
        "Your message\n\n  To:      ana@example.org, bo@example.org\n  Cc:      cy@example.org\n"
        "  Subject: quarterly report\n\n"
        "did not reach the following recipient(s):\n\n"
        "ana@example.org on 30/11/2026 10:10\n"
        "    The e-mail account does not exist at the organization this message was sent to.\n\n"
        "If you need help, please contact support@provider.example or write to help@provider.example;\n"
        "you can also reach postmaster@provider.example.\n",
        sender="System Administrator <postmaster@mx.example.net>",
    )
    assert list(_failed(raw)) == ["ana@example.org"]


def test_a_single_quoted_to_is_the_recipient_when_nothing_else_is_named() -> None:
    raw = _text_bounce(
        "Your message\n\n   To: dee@example.org\n   Subject: hello\n\nwas not delivered: user unknown.\n"
    )
    got = _failed(raw)
    assert list(got) == ["dee@example.org"]
    assert got["dee@example.org"].address_source == "text:quoted-to"


def test_the_address_an_alias_was_generated_from_is_not_a_second_recipient() -> None:
    raw = _text_bounce(
        "This message was created automatically by mail delivery software.\n\n"
        "A message that you sent could not be delivered to one or more of its\n"
        "recipients. This is a permanent error. The following address(es) failed:\n\n"
        "  kim@host7.example.net\n    (generated from kim@example.org)\n"
        "    LMTP error after RCPT TO:<kim@host7.example.net>:\n    550 5.1.1 User doesn't exist\n"
    )
    assert list(_failed(raw)) == ["kim@host7.example.net"]


def test_an_address_rewritten_in_the_remote_reply_is_not_a_second_recipient() -> None:
    raw = _text_bounce(
        "This is the mail system at host mx.example.net.\n\n"
        "I'm sorry to have to inform you that your message could not\nbe delivered to one or more recipients.\n\n"
        "<ray@example.org>: host mx.example.org[192.0.2.7] said: 550\n"
        "    5.1.1 <ray.smith@example.org>... Addressee unknown (in reply to RCPT TO\n    command)\n\n"
        "<sue@example.org>: host mx.example.org[192.0.2.7] said: 550 5.1.1\n"
        "    <bounces+3f2a@example.com>: unauthorized sender (in reply to RCPT TO command)\n",
        sender="MAILER-DAEMON@mx.example.net (Mail Delivery System)",
    )
    got = _failed(raw)
    assert sorted(got) == ["ray@example.org", "sue@example.org"]
    assert {r.address_source for r in got.values()} == {"text:block-head"}


def test_smtp_prefix_in_a_text_bounce_is_not_part_of_the_address() -> None:
    raw = _text_bounce(
        "Delivery has failed to these recipients or groups:\n\n  smtp=max@example.org\n"
        "  The email address you entered couldn't be found.\n"
    )
    assert list(_failed(raw)) == ["max@example.org"]


def test_quoted_local_part_in_a_text_bounce() -> None:
    raw = _text_bounce(
        "The following address(es) failed:\n\n" + '  "john doe"@example.org\n    550 5.1.1 mailbox unavailable\n'
    )
    assert list(_failed(raw)) == ['"john doe"@example.org']


def test_returned_message_headers_give_the_address_when_the_text_names_none() -> None:
    raw = (
        b"From: MAILER-DAEMON@mx.example.net\nTo: sender@example.com\nSubject: Undeliverable mail\n"
        b'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="B"\n\n'
        b"--B\nContent-Type: text/plain\n\nThe recipient's mailbox does not exist.\n"
        b"--B\nContent-Type: message/rfc822\n\nFrom: sender@example.com\nTo: fay@example.org\n"
        b"Subject: hi\n\nhello\n--B--\n"
    )
    parsed = parse_message(raw)
    assert parsed.kind is Kind.BOUNCE
    (r,) = parsed.recipients
    assert (r.address, r.address_source) == ("fay@example.org", "returned-message:to")


def test_delivered_recipients_of_a_dsn_carry_their_source_too() -> None:
    raw = _dsn("Final-Recipient: rfc822; ok@example.org\nAction: delivered\nStatus: 2.0.0")
    (r,) = parse_message(raw).recipients
    assert (r.reason, r.address_source) == ("delivered", "dsn:final-recipient")


def _derived(raw: bytes, extension: str = "", key: str = "") -> list[tuple[str, str | None]]:
    from sidecar.bounce.derive import derive
    from sidecar.bounce.envelope import Envelope
    from sidecar.suppression.address import canonical

    env = Envelope(sender="MAILER-DAEMON", recipient="bounces@example.com", extension=extension, size=len(raw))
    return [(f.address, f.status) for f in derive(parse_message(raw), env, key, canonical, raw).findings]


_REWRITTEN = _dsn(
    "Final-Recipient: rfc822; kim@mailhost.example.net\nOriginal-Recipient: rfc822; kim.alias@example.net\n"
    "Action: failed\nStatus: 5.1.1\nDiagnostic-Code: smtp; 550 5.1.1 user unknown"
)


def test_the_address_we_sent_to_is_what_is_recorded_and_suppressed() -> None:
    # the remote side rewrote kim.alias@ (ours) to kim@mailhost (its own): the finding names ours
    assert _derived(_REWRITTEN) == [("kim.alias@example.net", "5.1.1")]
    plain = _dsn("Final-Recipient: rfc822; kim@example.net\nAction: failed\nStatus: 5.1.1")
    assert _derived(plain) == [("kim@example.net", "5.1.1")]


def test_a_verp_token_naming_the_original_recipient_picks_it() -> None:
    from sidecar.bounce.verp import make_verp_token

    other = _dsn(
        "Final-Recipient: rfc822; zed@example.org\nAction: failed\nStatus: 5.2.2",
        "Final-Recipient: rfc822; kim@mailhost.example.net\nOriginal-Recipient: rfc822; kim.alias@example.net\n"
        "Action: failed\nStatus: 5.1.1",
    )
    token = make_verp_token(b"k", "kim.alias@example.net")
    # the token's recipient is the second block's Original-Recipient: its verdict, not the first's
    assert _derived(other, token, "k") == [("kim.alias@example.net", "5.1.1")]


# Formats by their documented templates: IBM/Lotus Domino ("Your message ... was not delivered
# to: ... because:"), Lotus Notes ("------- Failure Reasons --------"), Apache James's
# AbstractNotify mailet ("Error message below:" ... "Message details:" ... "RCPT TO:").
_DOMINO = b"""From: Postmaster@domino.example.jp
To: sender@example.com
Subject: DELIVERY FAILURE: User kim (kim@example.net) not listed in Domino Directory
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="D"

--D
Content-Type: text/plain

Your message

  Subject: quarterly report

was not delivered to:

  kim@example.net

because:

  User kim (kim@example.net) not listed in Domino Directory

--D
Content-Type: message/rfc822

From: sender@example.com
To: kim@example.net
Subject: quarterly report

hello
--D--
"""
_JAMES = b"""From: postmaster@mx.example.org
To: sender@example.com
Subject: [BOUNCE]
Message-ID: <123456.7.JavaMail.james@mx.example.org>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="J"

--J
Content-Type: text/plain

Hi. This is the James mail server at mx.example.org.
I'm afraid I wasn't able to deliver your message to the following addresses.
This is a permanent error; I've given up. Sorry it didn't work out.  Below
I include the list of recipients and the reason why I was unable to deliver
your message.

Original email subject: quarterly report

Error message below:
550 - Requested action not taken: no such user here

Message details:
  Subject: quarterly report
  Sent date: Mon Nov 30 10:00:00 UTC 2026
  MAIL FROM: sender@example.com
  RCPT TO: kim@example.org
  From: Sender <sender@example.com>
  To: kim@example.org, lee@example.org
  Size (in bytes): 1024
  Number of lines: 64

--J
Content-Type: message/rfc822

From: sender@example.com
To: kim@example.org, lee@example.org
Subject: quarterly report

hello
--J--
"""
_NOTES = b"""From: Postmaster@notes.example.jp
To: sender@example.com
Subject: Undeliverable message
Content-Type: text/plain

------- Failure Reasons  --------

User not listed in public Name & Address Book
kim@notes.example.jp

------- Returned Message --------
From: sender@example.com
To: kim@notes.example.jp, other@notes.example.jp
Subject: hi

hello
"""


@pytest.mark.parametrize(
    ("raw", "addresses", "source"),
    [
        (_DOMINO, ["kim@example.net"], "text:recipient-line"),
        (_NOTES, ["kim@notes.example.jp"], "text:recipient-line"),
        (_JAMES, ["kim@example.org"], "text:rcpt-to"),
    ],
)
def test_domino_notes_and_james_reports(raw: bytes, addresses: list[str], source: str) -> None:
    parsed = parse_message(raw)
    assert parsed.kind is Kind.BOUNCE
    assert [r.address for r in parsed.recipients] == addresses
    assert {r.address_source for r in parsed.recipients} == {source}


def test_a_service_mailbox_the_prose_names_as_the_failed_recipient_is_kept() -> None:
    raw = _text_bounce(
        "Address not found\n\nYour message wasn't delivered to support@example.org because the address\n"
        "couldn't be found, or is unable to receive mail. For help, send an e-mail to help@provider.example.\n"
    )
    assert list(_failed(raw)) == ["support@example.org"]


def test_the_original_message_id_is_never_a_recipient() -> None:
    raw = (
        b"From: MAILER-DAEMON@mx.example.net\nTo: sender@example.com\nSubject: Undeliverable mail\n"
        b"In-Reply-To: <20261130.4711.q@mail.example.com>\n"
        b'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="B"\n\n'
        b"--B\nContent-Type: text/plain\n\nYour message <20261130.4711.q@mail.example.com> could not be\n"
        b"delivered to <gil@example.org>: no such user.\n"
        b"--B\nContent-Type: message/rfc822\n\nFrom: sender@example.com\nTo: gil@example.org\n"
        b"Message-ID: <20261130.4711.q@mail.example.com>\nSubject: hi\n\nhello\n--B--\n"
    )
    assert list(_failed(raw)) == ["gil@example.org"]


# SMS/MMS gateways by their documented wording: Verizon's vtext.com (an Apache James notify
# mailet from post_master@: "Error: ..." and "RCPT TO:") and vzwpix.com ("Message could not be
# delivered to mobile." then the original's headers after "Original Message:").
_VTEXT = b"""From: post_master@vtext.com
To: sender@example.com
Subject: Message status
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="V"

--V
Content-Type: text/plain

Error: 550 - Requested action not taken: no such user here

Message details:
  Subject: hello
  Sent date: Mon Nov 30 10:00:00 GMT 2026
  MAIL FROM: sender@example.com
  RCPT TO: 5551234567@vtext.com
  From: Sender <sender@example.com>
  To: 5551234567@vtext.com
  Size (in bytes): 512
  Number of lines: 8
--V--
"""
_VZWPIX = b"""From: sysadmin@vzwpix.com
To: sender@example.com
Subject: MMS notice
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="P"

--P
Content-Type: text/plain

Message could not be delivered to mobile.
Error: No valid recipients for this MM

Original Message:
From: Sender <sender@example.com>
To: 5551234567@vzwpix.com
Subject: hello
Date: Mon, 30 Nov 2026 10:00:00 +0000
--P--
"""


@pytest.mark.parametrize(
    ("raw", "address", "source"),
    [
        (_VTEXT, "5551234567@vtext.com", "text:rcpt-to"),
        (_VZWPIX, "5551234567@vzwpix.com", "returned-message:to"),
    ],
)
def test_sms_gateway_reports(raw: bytes, address: str, source: str) -> None:
    parsed = parse_message(raw)
    assert parsed.kind is Kind.BOUNCE
    assert [(r.address, r.address_source) for r in parsed.recipients] == [(address, source)]


def test_an_unusable_original_recipient_falls_back_to_the_reported_address() -> None:
    raw = _dsn(
        "Final-Recipient: rfc822; kim@example.net\nOriginal-Recipient: rfc822; kim\x1b@example.net\n"
        "Action: failed\nStatus: 5.1.1"
    )
    assert _derived(raw) == [("kim@example.net", "5.1.1")]


def test_an_alias_expanded_by_the_reporting_mta_names_the_address_we_sent_to() -> None:
    """Postfix's "<final> (expanded from <alias>)" and Exim's "(generated from alias)": the
    suppression must name the alias (what the policy server saw at RCPT), the report the final."""
    from sidecar.bounce.parse.text_verdicts import alias_source

    assert alias_source("<lena@mx.example.net> (expanded from <lena@example.com>): Host or domain") == (
        "lena@example.com"
    )
    assert alias_source("<a@example.net> (expanded from\n<b@example.org>): user unknown") == "b@example.org"
    assert alias_source("  a@example.net\n    (generated from al@example.org)\n  SMTP error") == "al@example.org"
    # a parenthesis later in the prose is not the recipient's alias
    assert alias_source("<a@example.net>: user unknown (expanded from x@example.org)") is None
    assert alias_source("<a@example.net>: user unknown") is None
