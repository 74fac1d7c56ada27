"""The Postfix wiring itself (templates in postfix/), with a stub policy server and a
capture script in place of `sidecar ingest`: independent of the sidecar's own logic."""

from __future__ import annotations

import time

import pytest
from lab_env import MakeLab
from lab_postfix import BOUNCE_DOMAIN

from sidecar.postfix_config import FAIL_CLOSED, FAIL_OPEN

pytestmark = pytest.mark.postfix

SENDER = f"bounces+tok456@{BOUNCE_DOMAIN}"


def test_good_address_reaches_remote_mx_with_dunno_policy(make_lab: MakeLab) -> None:
    lab = make_lab(policy="stub", ingest="capture")
    result = lab.postfix.send(SENDER, ["good@example.test"])
    assert result.accepted, result
    got = lab.sink.wait_for_message("good@example.test")
    assert got[0].mail_from == SENDER
    assert b"Subject: lab message" in got[0].data
    lab.postfix.wait_queue_empty()
    states = lab.stub.states() if lab.stub else []
    # the policy service is asked at RCPT, DATA and END-OF-MESSAGE
    assert states == ["RCPT", "DATA", "END-OF-MESSAGE"], states


def test_dsn_goes_through_pipe_as_pipe_user(make_lab: MakeLab) -> None:
    lab = make_lab(
        policy="stub",
        ingest="capture",
        rcpt_replies={"hard@example.test": "550 5.1.1 <hard@example.test>: user unknown"},
    )
    assert lab.postfix.send(SENDER, ["hard@example.test"]).accepted
    lab.postfix.wait_for_log(r"status=sent \(delivered via sidecar-bounce service\)")
    [(meta, message)] = lab.captured()
    assert meta["uid"] == 65534
    assert meta["argv"] == [
        "ingest",
        "--sender=MAILER-DAEMON",
        f"--recipient={SENDER}",
        f"--queue-id={meta['argv'][3].split('=', 1)[1]}",
        "--extension=tok456",
    ]
    assert message.startswith(b"Return-Path: <MAILER-DAEMON>\n")
    assert f"Delivered-To: {SENDER}".encode() in message
    assert b"Status: 5.1.1" in message and b"Action: failed" in message
    lab.postfix.wait_queue_empty()


def test_plain_bounce_address_gives_empty_extension(make_lab: MakeLab) -> None:
    lab = make_lab(policy="stub", ingest="capture")
    result = lab.postfix.send(
        "",
        [f"bounces@{BOUNCE_DOMAIN}"],
        xclient={"ADDR": "203.0.113.7", "NAME": "mx.remote.test", "HELO": "mx.remote.test"},
    )
    assert result.accepted, result
    lab.postfix.wait_for_log(r"status=sent \(delivered via sidecar-bounce service\)")
    [(meta, _)] = lab.captured()
    assert meta["argv"][-1] == "--extension=", meta["argv"]
    assert meta["argv"][1] == "--sender=MAILER-DAEMON"
    assert lab.stub is not None
    rcpt = [r for r in lab.stub.requests if r.get("protocol_state") == "RCPT"]
    assert rcpt[0]["client_address"] == "203.0.113.7"


@pytest.mark.parametrize(
    ("action", "accepted"), [(FAIL_CLOSED, False), (FAIL_OPEN, True)], ids=["fail-closed", "fail-open"]
)
def test_policy_service_down(make_lab: MakeLab, action: str, accepted: bool) -> None:
    lab = make_lab(policy="stub", ingest="capture", values={"DEFAULT_ACTION": action})
    assert lab.stub is not None
    lab.stub.stop()
    started = time.monotonic()
    result = lab.postfix.send(SENDER, ["good@example.test"])
    assert result.accepted is accepted, result
    if not accepted:
        assert result.stage == "rcpt" and result.code == 451 and "4.3.5" in result.message, result
    else:
        lab.sink.wait_for_message("good@example.test")
    assert time.monotonic() - started < 30


def test_delayed_and_expired_dsns_reach_the_pipe(make_lab: MakeLab) -> None:
    busy = "busy@example.test"
    lab = make_lab(policy="stub", ingest="capture", rcpt_replies={busy: f"452 4.2.2 <{busy}>: Mailbox full"})
    assert lab.postfix.send(SENDER, [busy]).accepted
    lab.postfix.wait_for_log(r"status=deferred .*452 4\.2\.2")
    time.sleep(1.2)  # past delay_warning_time (1s in the lab)
    lab.postfix.flush()
    lab.postfix.wait_for_log(r"sender delay notification")
    lab.postfix.wait_for_log(r"status=sent \(delivered via sidecar-bounce service\)")
    lab.postfix.expire_all()
    lab.postfix.wait_for_log(r"status=sent \(delivered via sidecar-bounce service\)", count=2)
    lab.postfix.wait_queue_empty()
    (_, delayed), (_, final) = lab.captured()
    assert b"Action: delayed" in delayed and b"Status: 4.2.2" in delayed
    assert b"Action: failed" in final and b"Status: 4.2.2" in final


def test_xclient_login_poses_as_sasl_tenant(make_lab: MakeLab) -> None:
    """Apps authenticate as tenants; the lab fakes SASL with XCLIENT LOGIN=."""
    lab = make_lab(policy="stub", ingest="capture")
    result = lab.postfix.send(SENDER, ["good@example.test"], xclient={"LOGIN": "tenant1"})
    assert result.accepted, result
    assert lab.stub is not None
    assert {r.get("sasl_username") for r in lab.stub.requests} == {"tenant1"}
