"""The reason decision: status names, the failing SMTP command, provider codes."""

from __future__ import annotations

import pytest

from sidecar.bounce.parse.classify import classify
from sidecar.bounce.parse.textbounce import remote_host


@pytest.mark.parametrize(
    ("status", "text", "command", "reason", "hard"),
    [
        # "user unknown" believed at RCPT, or from an x.1.1 status
        (None, "550 unknown user", "RCPT", "userunknown", True),
        ("5.1.1", "550 5.1.1 <a@b.example>: Recipient address rejected: User unknown", None, "userunknown", True),
        # ... but after DATA, or from a relay/filter with no command known: filtered (soft)
        (None, "550 unknown user", "DATA", "filtered", False),
        (None, "550 kijitora@example.com... No such user", None, "filtered", False),
        # no command and no family sentence: a gateway's "unknown" may be a later refusal
        (None, "The recipient name is not recognized", None, "filtered", False),
        # an addressing status at MAIL FROM is about the sender
        ("5.1.0", "553 5.1.0 sender does not exist", "MAIL", "rejected", False),
        # wording overrules an x.1.1 status when it names another cause
        ("5.1.1", "550 5.1.1 has sent to too many recipients this hour", "RCPT", "speeding", False),
        # x.2.3 is a per-mailbox limit even when the text says "message size"
        ("5.2.3", "552 5.2.3 Message size exceeds fixed maximum message size", "MAIL", "exceedlimit", False),
        # a reason name in an address is not wording
        (None, "550 userunknown@example.org: recipient address rejected: mailbox full", "RCPT", "mailboxfull", False),
        # provider codes (Orange) and provider wording (Microsoft)
        ("5.5.0", "550 5.5.0 Adresse destinataire invalide. Invalid recipient. LPN007_416", None, "userunknown", True),
        ("5.1.10", "550 5.1.10 RESOLVER.ADR.RecipientNotFound; not found", None, "userunknown", True),
        # temporary failures are never hard
        ("4.0.0", "DNS Error: example.org doesn't receive email according to its MX", None, "notaccept", False),
    ],
)
def test_reason(status: str | None, text: str, command: str | None, reason: str, hard: bool) -> None:
    v = classify(status, text, "failed", command, "SMTP")
    assert (v.reason, v.hard) == (reason, hard)


@pytest.mark.parametrize(
    ("status", "text", "remote_mta", "reason"),
    [
        # GoDaddy IBnnn codes (smtp.secureserver.net)
        ("5.0.0", "550 192.0.2.1 has sent to too many recipients. IB607", "smtp.secureserver.net", "speeding"),
        ("5.0.0", "554 RBL Reject.", "mx.secureserver.net", "blocked"),
        # Spectrum AUP# numbers name a range of causes
        ("5.1.0", "550 5.1.0 <a@b.example> sender rejected. AUP#In-1310", None, "toomanyconn"),
        ("5.0.0", "554 AUP#O-1100 reverse DNS", None, "requireptr"),
        # Facebook response codes
        ("5.0.0", "550 5.0.0 RCP-P2 http://postmaster.facebook.com/response_codes", "mx.facebook.com", "filtered"),
        ("5.0.0", "550 RCP-P1 https://postmaster.facebook.com/", "mx.facebook.com", "userunknown"),
        # MessageLabs, only when the remote host is theirs
        ("5.0.0", "553 your envelope sender is in my badmailfrom list", "c1.messagelabs.com", "rejected"),
        # AOL's name-server reply for a domain without a usable MX
        ("5.4.4", "Name service error for name=x.example type=MX: Malformed or unexpected name server reply",
         "omr-a015e.mx.aol.com", "notaccept"),
    ],
)  # fmt: skip
def test_provider_code_tables(status: str, text: str, remote_mta: str | None, reason: str) -> None:
    assert classify(status, text, "failed", None, "SMTP", remote_mta=remote_mta).reason == reason


@pytest.mark.parametrize(
    ("text", "host"),
    [
        ("x@example.net host mx1.example.net [192.0.2.1] SMTP error from remote mail server", "mx1.example.net"),
        ("host mx.example.com[192.0.2.2] said: 550 5.1.1 <x@example.com>: unknown", "mx.example.com"),
        ("... while talking to MX.Example.ORG.:\n>>> RCPT To:<x@example.org>", "mx.example.org"),
        ("<x@example.jp>: 192.0.2.135 does not like recipient. Remote host said: 550", "192.0.2.135"),
        ("<x@example.org>: Connected to 192.0.2.225 but sender was rejected.", "192.0.2.225"),
        ("Sorry, I couldn't find any host named example.com. (#5.1.2)", None),
        ("550 5.1.1 user unknown", None),
    ],
)  # fmt: skip
def test_remote_host_in_text_bounces(text: str, host: str | None) -> None:
    assert remote_host(text) == host


def test_a_text_recipients_codeless_block_gives_way_to_the_quoted_reply() -> None:
    """A report that first says it will retry, then quotes the remote server's 5.7.1 refusal."""
    from sidecar.bounce.parse import parse_message
    from sidecar.bounce.parse.results import Category

    raw = (
        b"From: Mail Delivery Subsystem <mailer-daemon@mail.example.net>\n"
        b"To: sender@example.org\n"
        b"Subject: Delivery Status Notification (Delay)\n"
        b"Content-Type: text/plain\n\n"
        b"** Delivery incomplete **\n\n"
        b"There was a temporary problem delivering your message to someone@example.com. "
        b"The mail system will retry for 47 more hours. You'll be notified if the delivery fails permanently.\n\n"
        b"Learn more here: https://support.example.net/answer/1\n\n"
        b"The response from the remote server was:\n\n"
        b"550 5.7.1 This message was blocked because of the very low reputation of the sending domain.\n"
    )
    (r,) = parse_message(raw).recipients
    assert r.address == "someone@example.com"
    assert (r.reason, r.category, r.hard) == ("badreputation", Category.BLOCK, False)
    assert r.evidence is not None and r.evidence.phrase_class == "reputation"
