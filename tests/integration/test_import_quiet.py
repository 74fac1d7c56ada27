"""`sidecar import` end to end: delay warnings, auto-replies and read receipts never suppress,
and a withheld address says why (events list, suppressions why)."""

from __future__ import annotations

import mailbox
import subprocess
from pathlib import Path

from tests.harness.ingest import DELAY, HARD, q
from tests.harness.sidecar import BIN

AUTO_REPLY = (
    b"From: Kim <kim@example.org>\nTo: sender@example.com\nDate: Mon, 30 Nov 2026 10:00:00 +0000\n"
    b"Subject: Automatic reply: Undelivered Mail Returned to Sender\nAuto-Submitted: auto-replied\n"
    b"X-Autoreply: yes\n\n"
    b"I am away. Your message to kim@example.org could not be delivered to me until Monday.\n"
)
MDN = (
    b"From: Lee <lee@example.org>\nTo: sender@example.com\nDate: Mon, 30 Nov 2026 10:00:00 +0000\n"
    b"Subject: Not read: invoice\nMIME-Version: 1.0\n"
    b'Content-Type: multipart/report; report-type=disposition-notification; boundary="R"\n\n'
    b"--R\nContent-Type: text/plain\n\nYour message to lee@example.org was deleted without being read.\n"
    b"Final-Recipient: rfc822;lee@example.org\n"
    b"--R\nContent-Type: message/disposition-notification\n\n"
    b"Reporting-UA: mua.example.org; Example Mail\nFinal-Recipient: rfc822;lee@example.org\n"
    b"Disposition: manual-action/MDN-sent-manually; deleted\n--R--\n"
)
TEXT_DELAY = (
    b"From: Mail Delivery System <Mailer-Daemon@mx.example.net>\nTo: sender@example.com\n"
    b"Date: Mon, 30 Nov 2026 10:00:00 +0000\nSubject: Warning: message 1tXyZa-000123-AB delayed 24 hours\n\n"
    b"A message that you sent has not yet been delivered to one or more of its\n"
    b"recipients after more than 24 hours on the queue on mx.example.net.\n\n"
    b"  ray@example.org\n    Delay reason: SMTP error from remote mail server after RCPT TO:<ray@example.org>:\n"
    b"    550 5.1.1 <ray@example.org>: Recipient address rejected: User unknown\n\n"
    b"No action is required on your part. Delivery attempts will continue for some time.\n"
)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN), *args], capture_output=True, text=True, timeout=120)


def _mbox(path: Path, *messages: bytes) -> Path:
    mb = mailbox.mbox(str(path))
    for raw in messages:
        mb.add(raw)
    mb.flush()
    return path


def test_delay_auto_reply_and_read_receipt_create_no_suppression(tmp_path: Path) -> None:
    box = _mbox(tmp_path / "b.mbox", DELAY.read_bytes(), AUTO_REPLY, MDN, TEXT_DELAY, HARD.read_bytes())
    db = tmp_path / "s.db"
    r = _run("import", "--no-progress", "--db", f"sqlite:///{db}", str(box))
    assert r.returncode == 0, r.stderr
    assert "imported 5 messages" in r.stdout
    # the hard bounce is the control: import does suppress, only not for the other four
    assert q(db, "select address from suppressions") == [("hard1@example.test",)]
    kinds = dict(q(db, "select address, kind from events where address != 'hard1@example.test'"))
    assert kinds["kim@example.org"] == "auto-reply"
    assert kinds["ray@example.org"] == "delay"
    assert "lee@example.org" not in kinds
    assert all(k in ("delay", "auto-reply") for k in kinds.values())


def test_withheld_address_shows_its_decision(tmp_path: Path) -> None:
    box = _mbox(tmp_path / "b.mbox", HARD.read_bytes())
    db = f"sqlite:///{tmp_path / 's.db'}"
    assert _run("import", "--no-progress", "--require-record", "--db", db, str(box)).returncode == 0
    events = _run("events", "list", "--db", db, "--address", "hard1@example.test")
    assert events.returncode == 0 and "uncorroborated" in events.stdout
    why = _run("suppressions", "why", "--db", db, "hard1@example.test")
    assert why.returncode == 1
    assert why.stderr.strip().splitlines() == [
        "sidecar: hard1@example.test has never been suppressed (events withheld: 1 uncorroborated; "
        "sidecar events list --address hard1@example.test)"
    ]
