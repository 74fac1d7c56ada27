"""Issue 4 scenarios 6-7: mail that arrives from outside for the bounce domain, through
smtpd (a remote MX posing with XCLIENT from a non-loopback address), relay_domains and the
sidecar-bounce pipe: an asynchronous bounce and an ARF complaint."""

from __future__ import annotations

import time
from email.utils import formatdate

import pytest
from lab_env import VERP_KEY, MakeLab
from lab_postfix import BOUNCE_DOMAIN, wait_until
from lab_sidecar import flag

from sidecar.bounce.verp import make_verp_sender

pytestmark = pytest.mark.postfix

BOUNCE_ADDRESS = f"bounces@{BOUNCE_DOMAIN}"
REMOTE_MX = {"ADDR": "198.51.100.25", "NAME": "mx.remote.test", "HELO": "mx.remote.test"}
DELIVERED_VIA_PIPE = r"status=sent \(delivered via sidecar-bounce service\)"


def address_of(row: dict[str, object]) -> str:
    return str(row.get("address") or row.get("recipient") or "").lower()


def async_bounce(verp: str, failed: str) -> bytes:
    """A plain-text (not RFC 3464) bounce, the way an Exim smarthost sends them after accepting
    mail and then failing to forward it: the next hop refused the recipient at RCPT."""
    return (
        f"From: Mail Delivery System <Mailer-Daemon@mx.remote.test>\r\n"
        f"To: {verp}\r\n"
        f"Subject: Mail delivery failed: returning message to sender\r\n"
        f"Date: {formatdate()}\r\n"
        f"Message-Id: <{time.time_ns()}@mx.remote.test>\r\n"
        f"Auto-Submitted: auto-replied\r\n"
        f"\r\n"
        f"This message was created automatically by mail delivery software.\r\n"
        f"\r\n"
        f"A message that you sent could not be delivered to one or more of its\r\n"
        f"recipients. This is a permanent error. The following address(es) failed:\r\n"
        f"\r\n"
        f"  {failed}\r\n"
        f"    host mx2.remote.test [198.51.100.26]\r\n"
        f"    SMTP error from remote mail server after RCPT TO:<{failed}>:\r\n"
        f"    550 5.1.1 <{failed}>: Recipient address rejected: User unknown\r\n"
        f"\r\n"
        f"------ This is a copy of the message, including all the headers. ------\r\n"
        f"\r\n"
        f"Return-path: <{verp}>\r\n"
        f"From: App <app@tenant1.test>\r\n"
        f"To: <{failed}>\r\n"
        f"Subject: lab message\r\n"
        f"\r\n"
        f"hello\r\n"
    ).encode()


def arf_report(verp: str, victim: str) -> bytes:
    """An RFC 5965 feedback report about a message the lab sent to ``victim``."""
    boundary = "arf-boundary-lab"
    return (
        f"From: Feedback Loop <fbl@isp.test>\r\n"
        f"To: {verp}\r\n"
        f"Subject: FW: lab message\r\n"
        f"Date: {formatdate()}\r\n"
        f"Message-Id: <{time.time_ns()}@isp.test>\r\n"
        f"MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type=feedback-report; boundary="{boundary}"\r\n'
        f"\r\n"
        f"--{boundary}\r\n"
        f"Content-Type: text/plain; charset=us-ascii\r\n"
        f"\r\n"
        f"This is an email abuse report for an email message received from IP 192.0.2.10.\r\n"
        f"\r\n"
        f"--{boundary}\r\n"
        f"Content-Type: message/feedback-report\r\n"
        f"\r\n"
        f"Feedback-Type: abuse\r\n"
        f"User-Agent: LabFBL/1.0\r\n"
        f"Version: 1\r\n"
        f"Original-Mail-From: <{verp}>\r\n"
        f"Original-Rcpt-To: <{victim}>\r\n"
        f"Arrival-Date: {formatdate()}\r\n"
        f"Source-IP: 192.0.2.10\r\n"
        f"Reported-Domain: tenant1.test\r\n"
        f"\r\n"
        f"--{boundary}\r\n"
        f"Content-Type: message/rfc822\r\n"
        f"Content-Disposition: inline\r\n"
        f"\r\n"
        f"Return-Path: <{verp}>\r\n"
        f"From: App <app@tenant1.test>\r\n"
        f"To: <{victim}>\r\n"
        f"Subject: lab message\r\n"
        f"Message-ID: <orig-{time.time_ns()}@app.lab.test>\r\n"
        f"\r\n"
        f"hello\r\n"
        f"--{boundary}--\r\n"
    ).encode()


def test_6_async_bounce_from_remote_mx_is_ingested(make_lab: MakeLab) -> None:
    gone = "gone@remote.test"
    lab = make_lab()
    verp = make_verp_sender(VERP_KEY.encode(), gone, BOUNCE_ADDRESS, tenant="tenant1")
    result = lab.postfix.send("", [verp], raw=async_bounce(verp, gone), xclient=REMOTE_MX)
    assert result.accepted, result
    lab.postfix.wait_for_log(DELIVERED_VIA_PIPE, timeout=30)
    lab.postfix.wait_queue_empty()

    def events() -> list[dict[str, object]]:
        return [e for e in lab.events() if address_of(e) == gone]

    wait_until(events, 15, 0.25, f"an event for {gone}")
    assert flag(events()[-1].get("hard")) is True, events()
    lab.wait_suppressed(gone)
    assert lab.sink.rcpt_attempts_for(gone) == [], "nothing may be relayed to the remote MX"


def test_7_arf_complaint_suppresses_recipient_for_its_tenant(make_lab: MakeLab) -> None:
    victim = "victim@example.test"
    lab = make_lab(config={"ingest": {"complaint_scope": "tenant"}})
    verp = make_verp_sender(VERP_KEY.encode(), victim, BOUNCE_ADDRESS, tenant="tenant1")
    # the application (tenant1, SASL login faked with XCLIENT) mails the victim
    sent = lab.postfix.send(verp, [victim], xclient={"LOGIN": "tenant1"})
    assert sent.accepted, sent
    lab.sink.wait_for_message(victim)
    # the mailbox provider's feedback loop reports it to the VERP bounce address
    result = lab.postfix.send("fbl-bounces@isp.test", [verp], raw=arf_report(verp, victim), xclient=REMOTE_MX)
    assert result.accepted, result
    lab.postfix.wait_for_log(DELIVERED_VIA_PIPE, timeout=30)
    row = lab.wait_suppressed(victim)
    assert row.get("tenant") == "tenant1", row
    wait_until(
        lambda: lab.policy_action(victim, verp, sasl_username="tenant1").split()[0].upper() != "DUNNO",
        20,
        0.25,
        "the policy server to refuse the victim for tenant1",
    )
    refused = lab.postfix.send(verp, [victim], xclient={"LOGIN": "tenant1"})
    assert (refused.stage, refused.code) == ("rcpt", 550), refused
    # another tenant may still mail the same address
    other = make_verp_sender(VERP_KEY.encode(), victim, BOUNCE_ADDRESS, tenant="tenant2")
    accepted = lab.postfix.send(other, [victim], xclient={"LOGIN": "tenant2"})
    assert accepted.accepted, accepted
    lab.sink.wait_for_message(victim, count=2)
