"""Issue 4 scenarios 1-5: mail out through Postfix, DSNs back through pipe(8) into
`sidecar ingest`, decisions back into Postfix through the policy service."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from lab_env import VERP_KEY, MakeLab
from lab_postfix import BOUNCE_DOMAIN, wait_until
from lab_sidecar import flag, timestamp

from sidecar.bounce.verp import make_verp_sender

DATA = Path(__file__).resolve().parents[2] / "data" / "bounces" / "postfix"

pytestmark = pytest.mark.postfix

APP_SENDER = f"bounces@{BOUNCE_DOMAIN}"
DELIVERED_VIA_PIPE = r"status=sent \(delivered via sidecar-bounce service\)"


def verp(recipient: str) -> str:
    """The app's VERP sender for ``recipient``: its signed token corroborates the bounce (see
    docs/ingest.md, "Trust model"). Plain APP_SENDER bounces are corroborated by the policy
    server's record of recipients instead."""
    return make_verp_sender(VERP_KEY.encode(), recipient, APP_SENDER)


def address_of(row: dict[str, object]) -> str:
    return str(row.get("address") or row.get("recipient") or "").lower()


@pytest.mark.parametrize("policy_unix", [False, True], ids=["policy-inet", "policy-unix"])
def test_1_good_address_reaches_remote_mx(make_lab: MakeLab, policy_unix: bool) -> None:
    lab = make_lab(policy_unix=policy_unix)
    expected = f"unix:{lab.root}/run/policy.sock" if policy_unix else f"inet:127.0.0.1:{lab.policy_port}"
    assert f"check_policy_service {expected}," in lab.postfix.config_dir.joinpath("main.cf").read_text()
    result = lab.postfix.send(APP_SENDER, ["good@example.test"])
    assert result.accepted, result
    [got] = lab.sink.wait_for_message("good@example.test")
    assert got.mail_from == APP_SENDER
    lab.postfix.wait_queue_empty()
    assert lab.suppression_for("good@example.test") is None
    # fail-closed in the lab: acceptance means smtpd reached the policy server, and cleanly
    assert not re.findall(r"warning: .*(?:policy|problem talking)", lab.postfix.log_text())


@pytest.mark.parametrize("handoff", [True, False], ids=["handoff-socket", "direct-db-as-pipe-user"])
def test_2_hard_bounce_suppresses_and_postfix_refuses_at_rcpt(make_lab: MakeLab, handoff: bool) -> None:
    """With the hand-off socket `serve` stores the event; without it `ingest` writes the
    SQLite DB itself as the pipe user and `serve` learns it from the change feed."""
    hard = "hard@example.test"
    lab = make_lab(
        rcpt_replies={hard: f"550 5.1.1 <{hard}>: Recipient address rejected: User unknown"},
        config=None if handoff else {"ingest": {"socket": ""}},
    )
    assert lab.postfix.send(verp(hard), [hard]).accepted
    lab.sink.wait_for_rcpt_attempt(hard)
    # Postfix's DSN goes to bounces@bounce.lab.test -> sidecar-bounce pipe -> sidecar ingest
    lab.postfix.wait_for_log(DELIVERED_VIA_PIPE, timeout=30)
    row = lab.wait_suppressed(hard)
    assert timestamp(row.get("expires_at")) is None, row  # hard bounces suppress permanently
    # the running policy server learns it (change feed), then Postfix refuses at RCPT
    lab.wait_policy_rejects(hard, APP_SENDER)
    result = lab.postfix.send(APP_SENDER, [hard])
    assert not result.accepted
    assert result.stage == "rcpt", result
    assert result.code == 550, result
    assert "suppressed" in result.message, result
    lab.postfix.wait_queue_empty()
    assert len(lab.sink.rcpt_attempts_for(hard)) == 1, "the second message must never reach the remote MX"


def test_2c_plain_bounce_is_corroborated_by_the_record_and_a_forged_one_is_not(make_lab: MakeLab) -> None:
    """No VERP: the policy server recorded the RCPT it let through, so Postfix's real DSN
    suppresses; a forged DSN mailed to the bounce address for an address we never sent to is
    recorded as `uncorroborated` and suppresses nothing (docs/ingest.md, "Trust model")."""
    hard, never = "plain@example.test", "never-sent@example.test"
    lab = make_lab(rcpt_replies={hard: f"550 5.1.1 <{hard}>: Recipient address rejected: User unknown"})
    assert lab.postfix.send(APP_SENDER, [hard]).accepted
    lab.sink.wait_for_rcpt_attempt(hard)
    lab.postfix.wait_for_log(DELIVERED_VIA_PIPE, timeout=30)
    lab.wait_suppressed(hard)
    template = (DATA / "dsn-failed-550-5.1.1.eml").read_text()
    template = "\n".join(
        ln for ln in template.split("\n") if not ln.startswith(("Return-Path:", "X-Original-To:", "Delivered-To:"))
    )
    forged = template.replace("hard1@example.test", never).replace("\n", "\r\n").encode()
    assert lab.postfix.inject("", f"bounces@{BOUNCE_DOMAIN}", [forged], connections=1) == []

    def decision() -> str | None:
        return next((str(e.get("decision")) for e in lab.events() if address_of(e) == never), None)

    assert wait_until(decision, 30, 0.25, f"event for {never}") == "uncorroborated"
    assert lab.suppression_for(never) is None


def test_3_mailbox_full_three_times_suppresses_for_configured_time(make_lab: MakeLab) -> None:
    full = "full@example.test"
    lab = make_lab(
        rcpt_replies={full: f"552 5.2.2 <{full}>: Mailbox full"},
        config={"ingest": {"soft_threshold": 3, "soft_window": "1h", "soft_suppression": "2h"}},
    )
    for n in (1, 2, 3):
        if n > 1:
            assert lab.suppression_for(full) is None, f"suppressed after only {n - 1} mailbox-full bounce(s)"
            assert lab.policy_action(full, APP_SENDER).split()[0].upper() == "DUNNO"
        mark = lab.postfix.mark_log()
        assert lab.postfix.send(verp(full), [full]).accepted
        lab.postfix.wait_for_log(DELIVERED_VIA_PIPE, timeout=30, since=mark)
        lab.postfix.wait_queue_empty()
    row = lab.wait_suppressed(full)
    expires = timestamp(row.get("expires_at"))
    assert expires is not None, row
    assert 7200 - 120 < expires - time.time() <= 7200 + 5, row
    lab.wait_policy_rejects(full, APP_SENDER)
    result = lab.postfix.send(APP_SENDER, [full])
    assert (result.stage, result.code) == ("rcpt", 550), result
    assert len(lab.sink.rcpt_attempts_for(full)) == 3


def test_4_blocked_is_recorded_without_suppression(make_lab: MakeLab) -> None:
    blocked = "blocked@example.test"
    lab = make_lab(
        rcpt_replies={blocked: "554 5.7.1 Service unavailable; client [127.0.0.1] blocked using zen.example"}
    )
    assert lab.postfix.send(APP_SENDER, [blocked]).accepted
    lab.postfix.wait_for_log(DELIVERED_VIA_PIPE, timeout=30)
    lab.postfix.wait_queue_empty()
    events = [e for e in lab.events() if address_of(e) == blocked]
    assert events, f"no event recorded for {blocked}: {lab.events()}"
    assert events[-1].get("category") == "block", events
    assert lab.suppression_for(blocked) is None
    # still deliverable: the next message is tried at the remote MX again
    assert lab.postfix.send(APP_SENDER, [blocked]).accepted
    lab.sink.wait_for_rcpt_attempt(blocked, count=2)


def test_5_delayed_then_expired_452_is_soft(make_lab: MakeLab) -> None:
    busy = "busy@example.test"
    lab = make_lab(rcpt_replies={busy: f"452 4.2.2 <{busy}>: Mailbox full, try again later"})
    assert lab.postfix.send(APP_SENDER, [busy]).accepted
    lab.postfix.wait_for_log(r"status=deferred .*452 4\.2\.2", timeout=30)
    assert lab.postfix.queue(), "the 452 message should be in the deferred queue"
    # delay_warning_time = 1s in the lab: the next attempt sends the delayed DSN
    time.sleep(1.2)
    lab.postfix.flush()
    lab.postfix.wait_for_log(DELIVERED_VIA_PIPE, timeout=30)
    lab.postfix.wait_for_log(r"sender delay notification", timeout=5)

    def events_for() -> list[dict[str, object]]:
        return [e for e in lab.events() if address_of(e) == busy]

    wait_until(events_for, 15, 0.25, "delayed event")
    delayed = events_for()
    assert [e.get("action") for e in delayed] == ["delayed"], delayed
    assert flag(delayed[0].get("hard")) in (False, None), delayed
    assert lab.suppression_for(busy) is None

    # force expiry: the final DSN says failed, but with the 4.2.2 status: a soft bounce
    lab.postfix.expire_all()
    lab.postfix.wait_for_log(DELIVERED_VIA_PIPE, timeout=30, count=2)
    lab.postfix.wait_queue_empty()
    wait_until(lambda: len(events_for()) >= 2, 15, 0.25, "final (expired) event")
    final = events_for()[-1]
    assert final.get("action") == "failed", final
    assert final.get("status") == "4.2.2", final
    assert flag(final.get("hard")) is False, final
    assert lab.suppression_for(busy) is None, "one soft bounce must not suppress"
