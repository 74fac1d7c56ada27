"""Bounces through Postfix's own lmtp(8) client into `sidecar serve` (ingest.lmtp), with the
lines `sidecar postfix-config` prints: recorded with the DSN's queue id (XFORWARD), suppressed,
answered after commit; while the service is down every DSN is deferred, then delivered once it
is back (nothing lost, nothing twice); and a burst of DSNs (SIDECAR_DSN_BURST, default 300)."""

from __future__ import annotations

import os
import re
import time

import pytest
from lab_env import VERP_KEY, MakeLab
from lab_postfix import BOUNCE_DOMAIN, wait_until
from test_faults import count, dsn_messages, figure, metric, user_unknown

from sidecar.bounce.verp import make_verp_sender

pytestmark = pytest.mark.postfix

APP_SENDER = f"bounces@{BOUNCE_DOMAIN}"
BOUNCE_ADDRESS = f"bounces@{BOUNCE_DOMAIN}"
LMTP = {"lmtp": "run/lmtp.sock"}  # beside the lab's sidecar.toml, as ingest.socket is
SENT = r"(\w+): to=<[^>]*>, relay=[^,]*lmtp\.sock[^,]*, .*status=sent \(250 2\.0\.0 Ok: (\w+) id=(\d+)"
DEFERRED = r"lmtp\[\d+\]: \w+: to=<[^>]*>, .*status=deferred \(connect to [^)]*lmtp\.sock\]"


def test_dsn_through_lmtp_is_recorded_with_its_queue_id_and_suppresses(make_lab: MakeLab) -> None:
    hard = "lmtphard@example.test"
    lab = make_lab(rcpt_replies={hard: user_unknown(hard)}, config={"ingest": LMTP})
    main_cf = lab.postfix.config_dir.joinpath("main.cf").read_text()
    assert f"{BOUNCE_DOMAIN}=sidecar-lmtp:unix:{lab.root}/run/lmtp.sock" in main_cf
    sender = make_verp_sender(VERP_KEY.encode(), hard, APP_SENDER)
    assert lab.postfix.send(sender, [hard]).accepted
    [m] = lab.postfix.wait_for_log(SENT, timeout=30)
    dsn_queue_id, state, message_id = m.groups()
    assert state == "parsed"
    row = lab.wait_suppressed(hard)
    assert row["reason"] == "hard bounce", row
    assert (
        count(lab, f"SELECT COUNT(*) FROM raw_messages WHERE id = {int(message_id)} AND queue_id = '{dsn_queue_id}'")
        == 1
    )
    assert count(lab, "SELECT COUNT(*) FROM raw_messages WHERE envelope_sender = 'MAILER-DAEMON'") == 1
    lab.wait_policy_rejects(hard, APP_SENDER)
    lab.postfix.wait_queue_empty()
    assert metric(lab, "sidecar_lmtp_replies_total").get('{outcome="accepted"}') == 1


def test_service_down_dsns_deferred_then_delivered_once(make_lab: MakeLab) -> None:
    """The policy service is a stub here, so that Postfix accepts the DSNs while `sidecar serve`
    (the LMTP listener) is not running."""
    lab = make_lab(policy="stub", config={"ingest": {**LMTP, "require_corroboration": False}})
    server = lab.server
    assert server is not None
    try:
        messages = dsn_messages(3)
        mark = lab.postfix.mark_log()
        assert lab.postfix.inject("", BOUNCE_ADDRESS, messages, connections=1) == []
        lab.postfix.wait_for_log(DEFERRED, timeout=30, since=mark, count=len(messages))
        queue = lab.postfix.queue()
        assert len(queue) == len(messages) and {q["queue_name"] for q in queue} == {"deferred"}, queue
        assert not re.search(r"status=bounced", lab.postfix.log_text()[mark:])
        server.start()
        lab.postfix.flush()
        lab.postfix.wait_queue_empty(timeout=60)
        assert count(lab, "SELECT COUNT(*) FROM raw_messages") == len(messages)
        assert count(lab, "SELECT COUNT(DISTINCT address) FROM events WHERE address LIKE 'burst%'") == len(messages)
        lab.postfix.flush()  # nothing left to deliver, nothing recorded twice
        time.sleep(0.5)
        assert count(lab, "SELECT COUNT(*) FROM raw_messages") == len(messages)
        assert not re.search(r"status=bounced", lab.postfix.log_text()[mark:])
    finally:
        server.stop()


def burst_size() -> int:
    return int(os.environ.get("SIDECAR_DSN_BURST", "300"))


def test_burst_of_dsns_through_lmtp(make_lab: MakeLab) -> None:
    """bench/bench_dsn_burst.py --entries lmtp runs this with SIDECAR_DSN_BURST=1000."""
    n = burst_size()
    values = (
        {"LMTP_MAXPROC": os.environ["SIDECAR_DSN_BURST_MAXPROC"]} if os.environ.get("SIDECAR_DSN_BURST_MAXPROC") else {}
    )
    lab = make_lab(config={"ingest": {**LMTP, "require_corroboration": False}}, values=values)
    messages = dsn_messages(n)
    mark = lab.postfix.mark_log()
    started = time.monotonic()
    assert lab.postfix.inject("", BOUNCE_ADDRESS, messages, connections=4) == []
    injected = time.monotonic()
    wait_until(lambda: count(lab, "SELECT COUNT(*) FROM raw_messages") >= n, 240, 0.25, f"{n} DSNs recorded")
    stored = time.monotonic()
    lab.postfix.wait_queue_empty(timeout=60, flush=False)
    done = time.monotonic()
    log = lab.postfix.log_text()[mark:]
    sent = len(re.findall(SENT, log))
    deferrals = len(re.findall(DEFERRED, log))
    took = done - started
    figure(
        f"d: {n} DSNs: injected over SMTP in {injected - started:.2f} s, all recorded after "
        f"{stored - started:.2f} s, queue empty after {took:.2f} s = {n / took:.1f} messages/s "
        f"(deferred on the way: {deferrals})"
    )
    connections = metric(lab, "sidecar_lmtp_connections_total").get("", 0)
    delays = [[float(x) for x in d.split("/")] for d in re.findall(r"lmtp\[\d+\]: .*delays=([\d./]+), dsn=2", log)]
    means = "/".join(f"{sum(d[i] for d in delays) / max(len(delays), 1):.3f}" for i in range(4))
    figure(f"d: over {connections:.0f} LMTP connections; mean delays (before qmgr/in qmgr/connect/transfer) {means} s")
    assert sent == n, f"{sent} of {n} delivered via LMTP"
    assert deferrals == 0
    assert not re.search(r"status=bounced", log), "a DSN was bounced (lost)"
    assert count(lab, "SELECT COUNT(*) FROM raw_messages") == n
    assert count(lab, "SELECT COUNT(DISTINCT address) FROM events WHERE address LIKE 'burst%'") == n
    assert count(lab, "SELECT COUNT(*) FROM suppressions WHERE address LIKE 'burst%'") == n
