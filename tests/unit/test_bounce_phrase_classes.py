"""One test per phrase class (sidecar/bounce/parse/phrases.py), with wordings written from its sources.

Each sample is worded the way the named MTA or receiver documents its reply (not copied from a
corpus message). A sample is ``(status, text, command, reason, category, hard)``: the DSN status
field (or None), the diagnostic, the SMTP command it came after, and the expected result. The
phrase class itself must find its words in each sample marked with it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecar.bounce.parse.classify import classify
from sidecar.bounce.parse.phrases import BY_NAME, CLASSES
from sidecar.bounce.parse.results import Category

INVALID, FULL, BLOCK, DNS, NETWORK, BIG, UNKNOWN = (
    Category.INVALID_RECIPIENT,
    Category.MAILBOX_FULL,
    Category.BLOCK,
    Category.DNS,
    Category.NETWORK,
    Category.MESSAGE_TOO_BIG,
    Category.UNKNOWN,
)
Sample = tuple[str | None, str, str | None, str, Category, bool]


def _check(name: str, samples: list[Sample]) -> None:
    pattern = BY_NAME[name].pattern
    for status, text, command, reason, category, hard in samples:
        v = classify(status, text, "failed", command, "SMTP")
        assert (v.reason, v.category, v.hard) == (reason, category, hard), text
        assert v.evidence is not None
        if v.reason == BY_NAME[name].reason:
            assert (v.evidence.phrase_class, bool(v.evidence.words)) == (name, True), text
            assert pattern.search(v.evidence.words or ""), text


def test_too_large() -> None:
    """RFC 3463 X.3.4; RFC 1870/5321 552; Postfix 'message size exceeds fixed limit'; Gmail 552 5.3.4."""
    _check(
        "too-large",
        [
            ("5.3.4", "552 5.3.4 Message size exceeds fixed limit", "DATA", "mesgtoobig", BIG, False),
            (None, "552 Message too large for this system", "DATA", "mesgtoobig", BIG, False),
            ("5.0.0", "552 Message exceeds the maximum message size", None, "mesgtoobig", BIG, False),
        ],
    )


def test_mailbox_full() -> None:
    """RFC 3463 X.2.2; Gmail 452/552 'over quota'; Exim appendfile quota; Postfix local 'Disk quota exceeded'."""
    _check(
        "mailbox-full",
        [
            ("5.2.2", "552 5.2.2 The email account that you tried to reach is over quota", "RCPT", "mailboxfull",
             FULL, False),
            ("4.2.2", "452 4.2.2 Mailbox full", "RCPT", "mailboxfull", FULL, False),
            ("5.0.0", "mailbox is full (MTA-imposed quota exceeded while writing to file)", None, "mailboxfull",
             FULL, False),
            (None, "maildir delivery failed: Disk quota exceeded", None, "mailboxfull", FULL, False),
        ],
    )  # fmt: skip


def test_mailbox_disabled() -> None:
    """RFC 3463 X.2.1; IANA X.7.13; Gmail 550 5.2.1 'account ... is disabled'; Yahoo 'inactive'."""
    _check(
        "mailbox-disabled",
        [
            ("5.2.1", "550 5.2.1 The email account that you tried to reach is disabled.", "RCPT", "suspend",
             INVALID, False),
            ("5.0.0", "550 This mailbox has been suspended", None, "suspend", INVALID, False),
        ],
    )  # fmt: skip


def test_mailbox_moved() -> None:
    """RFC 3463 X.1.6 (mailbox has moved, no forwarding address); RFC 5321 551."""
    _check(
        "mailbox-moved",
        [
            ("5.1.6", "551 5.1.6 Recipient address has moved; no forwarding address", "RCPT", "hasmoved",
             INVALID, True),
            ("5.0.0", "550 The user is no longer with this company", None, "hasmoved", INVALID, True),
        ],
    )  # fmt: skip


def test_relay_denied() -> None:
    """Postfix smtpd 'Relay access denied'; Exim 'relay not permitted'; Microsoft 365 5.7.64."""
    _check(
        "relay-denied",
        [
            ("5.7.1", "554 5.7.1 <u@example.net>: Relay access denied", "RCPT", "norelaying", BLOCK, False),
            ("5.0.0", "550 relay not permitted", None, "norelaying", BLOCK, False),
        ],
    )


def test_authentication() -> None:
    """IANA X.7.26 (RFC 7372); Gmail 5.7.26 'unauthenticated'; DMARC/SPF rejections (Yahoo 5.7.9)."""
    _check(
        "authentication",
        [
            ("5.7.26", "550-5.7.26 This mail is unauthenticated, which poses a security risk", "DATA",
             "authfailure", BLOCK, False),
            ("5.7.1", "550 5.7.1 Email rejected per DMARC policy for example.com", "DATA", "authfailure",
             BLOCK, False),
            ("5.0.0", "550 SPF check failed for the sending host", None, "authfailure", BLOCK, False),
        ],
    )  # fmt: skip


def test_reverse_dns() -> None:
    """IANA X.7.25 (RFC 7372); Gmail 5.7.25 'does not have a PTR record'; Postfix 'cannot find your hostname'."""
    _check(
        "reverse-dns",
        [
            ("5.7.25", "550-5.7.25 The IP address sending this message does not have a PTR record setup", "MAIL",
             "requireptr", BLOCK, False),
            ("4.7.1", "450 4.7.1 Client host rejected: cannot find your hostname, [192.0.2.1]", "RCPT",
             "requireptr", BLOCK, False),
        ],
    )  # fmt: skip


def test_reputation() -> None:
    """Yahoo 421 4.7.0 [TSS04] 'unexpected volume or user complaints'; Gmail 'very low reputation'."""
    _check(
        "reputation",
        [
            ("4.7.0", "421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume "
             "or user complaints", "MAIL", "badreputation", BLOCK, False),
            ("5.7.1", "550 5.7.1 This message is suspicious due to the very low reputation of the sending domain",
             "DATA", "badreputation", BLOCK, False),
        ],
    )  # fmt: skip


def test_virus() -> None:
    """RFC 3463 X.7.0 content refusals; sisimai VirusDetected rule list."""
    _check(
        "virus",
        [
            ("5.0.0", "554 Message rejected: virus found in attachment", "DATA", "virusdetected", BLOCK, False),
            (None, "550 The message contains malware", "DATA", "virusdetected", BLOCK, False),
        ],
    )


def test_spam_content() -> None:
    """Gmail 550 5.7.1 'likely unsolicited mail'; Microsoft 365 'rejected as spam'; IANA X.7.28."""
    _check(
        "spam-content",
        [
            ("5.0.0", "554 5.0.0 Your message looks like spam", "DATA", "spamdetected", BLOCK, False),
            ("5.7.1", "550-5.7.1 This message is likely unsolicited mail", "DATA", "spamdetected", BLOCK, False),
            ("5.7.28", "421 4.7.28 Unusual rate of unsolicited mail from your IP", "DATA", "spamdetected",
             BLOCK, False),
        ],
    )  # fmt: skip


def test_not_rfc_compliant() -> None:
    """Gmail 550 5.7.1 'not RFC 5322 compliant'; sisimai NotCompliantRFC."""
    _check(
        "not-rfc-compliant",
        [
            ("5.7.1", "550-5.7.1 This message is not RFC 5322 compliant: multiple From headers", "DATA",
             "notcompliantrfc", BLOCK, False),
        ],
    )  # fmt: skip


def test_policy_block() -> None:
    """RFC 3463 X.7.1; Yahoo 554 5.7.9 'Message not accepted for policy reasons'."""
    _check(
        "policy-block",
        [
            ("5.7.9", "554 5.7.9 Message not accepted for policy reasons", "DATA", "policyviolation", BLOCK, False),
            (None, "550 Administrative prohibition", "RCPT", "policyviolation", BLOCK, False),
            # only a generic code: the wording decides (it used to be "onhold")
            ("5.0.0", "550 Message rejected due to local security policies", None, "policyviolation", BLOCK, False),
        ],
    )


def test_too_many_connections() -> None:
    """RFC 5321 421; Postfix anvil 'Too many connections from'."""
    _check(
        "too-many-connections",
        [
            ("4.7.0", "421 4.7.0 Too many concurrent SMTP connections from this IP", None, "toomanyconn",
             BLOCK, False),
            (None, "421 Too many connections from your host", None, "toomanyconn", BLOCK, False),
        ],
    )  # fmt: skip


def test_rate_limited() -> None:
    """Gmail 450 4.2.1 'receiving mail at a rate that prevents additional messages'; RFC 5321 452."""
    _check(
        "rate-limited",
        [
            ("4.2.1", "450 4.2.1 The user you are trying to contact is receiving mail at a rate that prevents "
             "additional messages from being delivered", "RCPT", "speeding", BLOCK, False),
            ("4.5.3", "452 4.5.3 Too many recipients", "RCPT", "speeding", BLOCK, False),
        ],
    )  # fmt: skip


def test_sender_refused() -> None:
    """RFC 3463 X.1.8; Postfix 'Sender address rejected: Domain not found'; Exim 'sender verify failed'."""
    _check(
        "sender-refused",
        [
            ("5.1.8", "553 5.1.8 <s@example.com>: Sender address rejected: Domain not found", "MAIL", "rejected",
             BLOCK, False),
            ("5.0.0", "550 Sender verify failed", "RCPT", "rejected", BLOCK, False),
            (None, "550 5.0.0 Envelope sender address rejected by local policy", "MAIL", "rejected", BLOCK, False),
            (None, "553 Null sender is not allowed", None, "rejected", BLOCK, False),
            (None, "553 sender <s@example.com> does not exist", "RCPT", "rejected", BLOCK, False),
            # Postfix sender verification: the "User unknown" is our sender's, never the recipient's
            (None, "450 4.1.7 <s@example.com>: Sender address rejected: undeliverable address: host mx.example.com "
             "said: 550 User unknown", "RCPT", "rejected", BLOCK, False),
        ],
    )  # fmt: skip


def test_mailbox_not_found() -> None:
    """RFC 3463 X.1.1; Microsoft 365 5.1.10 RecipientNotFound and 5.4.1 'Access denied' (directory-based
    edge blocking); Yahoo 552 'mailbox not found'; Gmail 5.1.1 'does not exist'; qmail 'no mailbox here'.

    A statement that the mailbox does not exist decides after DATA, or under a precise code, too.
    """
    _check(
        "mailbox-not-found",
        [
            (None, "550 5.4.1 Recipient address rejected: Access denied. AS(201806281)", None, "userunknown",
             INVALID, True),
            ("5.1.10", "550 5.1.10 Recipient not found by SMTP address lookup", None, "userunknown", INVALID, True),
            (None, "552 1 Requested mail action aborted, mailbox not found", "DATA", "userunknown", INVALID, True),
            (None, "550-5.1.1 The email account that you tried to reach does not exist", "RCPT", "userunknown",
             INVALID, True),
            (None, "Sorry, no mailbox here by that name. (#5.1.1)", None, "userunknown", INVALID, True),
            (None, "550 Requested action not taken: mailbox <u@example.org> unavailable", "DATA", "userunknown",
             INVALID, True),
            (None, "550 <u@example.org>... does not exist", "RCPT", "userunknown", INVALID, True),
        ],
    )  # fmt: skip
    # a gateway's report with no SMTP session and no code: the message may have been refused later
    v = classify(None, "Recipient not found", "failed", None, "SMTP", session=False)
    assert (v.reason, v.hard) == ("filtered", False)


def test_mailbox_unknown() -> None:
    """RFC 3463 X.1.1; Postfix 'User unknown in local recipient table'; Sendmail 'User unknown'; Exim."""
    _check(
        "mailbox-unknown",
        [
            ("5.1.1", "550 5.1.1 <u@example.org>: Recipient address rejected: User unknown in local recipient "
             "table", "RCPT", "userunknown", INVALID, True),
            (None, "550 unknown user", "RCPT", "userunknown", INVALID, True),
            (None, "550 User <u@example.org> is not recognized", "RCPT", "userunknown", INVALID, True),
            ("5.0.0", "550 5.0.0 <u@example.org>... User unknown", "RCPT", "userunknown", INVALID, True),
            # the same words after DATA from a filter or carrier: a refusal (sisimai's Filtered rule)
            (None, "550 unknown user", "DATA", "filtered", BLOCK, False),
        ],
    )  # fmt: skip


def test_domain_accepts_no_mail() -> None:
    """IANA X.1.10 (null MX, RFC 7505); Gmail 'doesn't receive email according to its MX'."""
    _check(
        "domain-accepts-no-mail",
        [
            ("5.1.10", "556 5.1.10 Recipient address has null MX", "RCPT", "notaccept", DNS, True),
            ("4.0.0", "DNS Error: example.org doesn't receive email according to its MX", None, "notaccept",
             DNS, False),
        ],
    )  # fmt: skip


def test_network() -> None:
    """RFC 3463 X.4.1/X.4.2/X.4.6; Postfix 'Connection refused', 'lost connection', 'loops back to myself'."""
    _check(
        "network",
        [
            ("4.4.1", "connect to mx.example.net[192.0.2.1]:25: Connection refused", None, "networkerror",
             NETWORK, False),
            (None, "lost connection with mx.example.net[192.0.2.1] while receiving the initial server greeting",
             None, "networkerror", NETWORK, False),
            ("5.4.6", "554 5.4.6 mail for example.org loops back to myself", None, "networkerror", NETWORK, False),
            # a failed connection is no missing domain
            ("4.4.1", "connect to mx.example.org[192.0.2.1]:25: No route to host", None, "networkerror",
             NETWORK, False),
        ],
    )  # fmt: skip


def test_dns_temporary() -> None:
    """RFC 3463 X.4.3; Postfix 'Temporary lookup failure', 'Name service error ... try again'."""
    _check(
        "dns-temporary",
        [
            ("4.0.0", "451 4.3.0 <u@example.org>: Temporary lookup failure", "RCPT", "networkerror", NETWORK, False),
            (None, "Name service error for domain example.org: Host not found, try again", None, "networkerror",
             NETWORK, False),
        ],
    )  # fmt: skip


def test_domain_not_found() -> None:
    """RFC 3463 X.1.2/X.4.4; Postfix 'Host or domain name not found'; qmail 'couldn't find any host named';
    Sendmail 'Host unknown'; Exim 'Unrouteable address'."""
    _check(
        "domain-not-found",
        [
            (None, "Sorry, I couldn't find any host named example.invalid. (#5.1.2)", None, "hostunknown", DNS, True),
            ("5.4.4", "Host or domain name not found. Name service error for name=example.invalid type=A: Host not "
             "found", None, "hostunknown", DNS, True),
            # stated not found, but "try again": a DNS failure, soft
            (None, "Host or domain name not found. Name service error for name=example.invalid type=MX: Host not "
             "found, try again", None, "hostunknown", DNS, False),
            ("5.0.0", "550 Host unknown (Name server: example.invalid: host not found)", None, "hostunknown",
             DNS, True),
        ],
    )  # fmt: skip


def test_blocklist() -> None:
    """Postfix 'blocked using zen.spamhaus.org'; Microsoft 365 5.7.606 'banned sending IP'; Yahoo [BL21]."""
    _check(
        "blocklist",
        [
            ("5.7.1", "554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org",
             "RCPT", "blocked", BLOCK, False),
            (None, "550 5.7.606 Access denied, banned sending IP [192.0.2.1]", "RCPT", "blocked", BLOCK, False),
            # our HELO name does not resolve: no missing recipient domain
            (None, "504 5.5.2 <relay.example>: Helo command rejected: Host not found", "RCPT", "blocked", BLOCK,
             False),
        ],
    )  # fmt: skip


def test_recipient_filter() -> None:
    """RFC 3463 X.2.1; sisimai Filtered: the recipient's own rules refused the message."""
    _check(
        "recipient-filter",
        [
            ("5.2.1", "550 5.2.1 Message refused due to recipient preferences", "DATA", "filtered", BLOCK, False),
        ],
    )


def test_content_error() -> None:
    """RFC 3463 X.6.x (message content or media status)."""
    _check(
        "content-error",
        [("5.6.0", "554 5.6.0 Message contains invalid header", "DATA", "contenterror", BLOCK, False)],
    )


def test_syntax_error() -> None:
    """RFC 5321 500/501; RFC 3463 X.5.2."""
    _check(
        "syntax-error",
        [("5.5.2", "500 5.5.2 Syntax error, command unrecognized", None, "syntaxerror", UNKNOWN, False)],
    )


def test_system_full() -> None:
    """RFC 3463 X.3.1; RFC 5321 452 'insufficient system storage'."""
    _check(
        "system-full",
        [("4.3.1", "452 4.3.1 Insufficient system storage", "MAIL", "systemfull", NETWORK, False)],
    )


def test_mailer_error() -> None:
    """Postfix local/pipe 'Command died with status'; Sendmail X-Unix diagnostics."""
    _check(
        "mailer-error",
        [("5.3.0", 'Command died with status 1: "/usr/bin/procmail"', None, "mailererror", NETWORK, False)],
    )


def test_expired() -> None:
    """RFC 3463 X.4.7; qmail 'in the queue too long'; Exim 'retry timeout exceeded'; Sendmail 'Cannot send
    message for 5 days'."""
    _check(
        "expired",
        [
            ("4.4.7", "I'm not going to try again; this message has been in the queue too long.", None, "expired",
             NETWORK, False),
            (None, "retry timeout exceeded", None, "expired", NETWORK, False),
            ("5.0.0", "Cannot send message for 5 days", None, "expired", NETWORK, False),
            (None, "Failed to deliver to domain example.org after 5 tries", None, "expired", NETWORK, False),
        ],
    )  # fmt: skip


def test_security_error() -> None:
    """RFC 4954 530/535, RFC 3463 X.7.0/X.7.8 (authentication credentials invalid)."""
    _check(
        "security-error",
        [
            ("5.7.0", "530 5.7.0 Authentication required", "MAIL", "securityerror", BLOCK, False),
            ("5.7.8", "535 5.7.8 Authentication credentials invalid", None, "securityerror", BLOCK, False),
        ],
    )


def test_tls_required() -> None:
    """IANA X.7.10 (encryption needed); Postfix 'TLS is required, but was not offered'."""
    _check(
        "tls-required",
        [
            (None, "TLS is required, but was not offered by host mx.example.org[192.0.2.1]", None,
             "failedstarttls", NETWORK, False),
            ("5.7.10", "530 5.7.10 Encryption needed", "MAIL", "failedstarttls", NETWORK, False),
        ],
    )  # fmt: skip


def test_system_error() -> None:
    """RFC 3463 X.3.0/X.3.5; RFC 5321 451 'local error in processing'."""
    _check(
        "system-error",
        [
            ("4.3.0", "451 4.3.0 Temporary local problem - please try later", "DATA", "systemerror", NETWORK, False),
            ("5.3.5", "554 5.3.5 Local configuration error", None, "systemerror", NETWORK, False),
        ],
    )


def test_every_class_has_a_test_and_sources_and_a_docs_entry() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "bounces.md").read_text()
    tests = {n for n in globals() if n.startswith("test_")}
    for c in CLASSES:
        assert c.sources and c.phrases and c.meaning
        assert f"test_{c.name.replace('-', '_')}" in tests, c.name
        assert f"`{c.name}`" in docs, c.name


@pytest.mark.parametrize(
    ("text", "evidence"),
    [
        # the remote host's name is no wording: "cloudfilter" is not a filter
        ("host mx.cloudfilter.example[192.0.2.7] said: 550 5.1.1 <u@example.org> recipient address rejected",
         ("userunknown", "status")),
        # a precise code and the wording agree: the status decides, the words are shown
        ("550 5.1.1 <u@example.org>: Recipient address rejected: User unknown", ("userunknown", "status")),
        # only a generic code: the wording decides
        ("550 5.0.0 Message not accepted for policy reasons", ("policyviolation", "wording")),
    ],
)  # fmt: skip
def test_evidence_names_the_deciding_signal(text: str, evidence: tuple[str, str]) -> None:
    v = classify(None, text, "failed", "RCPT", "SMTP")
    assert v.evidence is not None
    assert (v.reason, v.evidence.decided_by) == evidence
    assert v.evidence.status_source == "text"


# --- sidecar parse --explain, through the CLI entry point -------------------------------------

DATA = Path(__file__).resolve().parents[1] / "data" / "bounces"


def test_parse_explain_shows_the_deciding_signal_and_words(capsys: pytest.CaptureFixture[str]) -> None:
    from sidecar.cli import main

    # a Postfix text bounce: no status code, a "mailbox not found" after DATA
    assert main(["parse", "--explain", str(DATA / "modern" / "crisp-552_no_such_recipient.eml")]) == 0
    out = capsys.readouterr().out
    assert "shagha+34993495@yahoo.com" in out
    assert 'phrase class:  mailbox-not-found "mailbox not found"' in out
    assert "SMTP command: DATA" in out
    assert "decided by:    wording -> userunknown, invalid-recipient, hard" in out
    assert "address from:" in out


def test_parse_explain_json_carries_the_evidence_of_a_dsn_recipient(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from sidecar.cli import main

    assert main(["parse", "--explain", "--json", str(DATA / "corpus" / "lhost-postfix-04.eml")]) == 0
    out = json.loads(capsys.readouterr().out)
    (r,) = out["results"]
    assert (r["address"], r["reason"], r["hard"]) == ("kijitora@example.co.jp", "userunknown", True)
    assert "address_source" in r
    ev = r["evidence"]
    assert (ev["status"], ev["status_source"], ev["decided_by"], ev["command"]) == (
        "5.1.1",
        "dsn-field",
        "status",
        "RCPT",
    )


def test_parse_explain_a_missing_file_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from sidecar.cli import main

    assert main(["parse", "--explain", str(DATA / "no-such-file.eml")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err and "no-such-file.eml" in err
