"""Issue 4 scenario 8: an application that sends past its rate limit gets a 4xx from
Postfix; after the window it is accepted again."""

from __future__ import annotations

import time

import pytest
from lab_env import MakeLab
from lab_postfix import BOUNCE_DOMAIN

pytestmark = pytest.mark.postfix

RATE, PER = 2, 4.0  # 2 messages per 4 s, no burst: a full window refills in 4 s


def test_8_rate_limit_defers_then_recovers(make_lab: MakeLab) -> None:
    sender = f"bounces+app1@{BOUNCE_DOMAIN}"
    lab = make_lab(
        config={
            "ratelimit": {
                "rules": [
                    {
                        "name": "per-sender",
                        "key": ["sender"],
                        "count": "messages",
                        "limits": [{"rate": RATE, "per": f"{PER:g}s", "burst": 0}],
                    }
                ]
            }
        }
    )
    results = [lab.postfix.send(sender, [f"user{n}@example.test"]) for n in range(RATE)]
    assert all(r.accepted for r in results), results
    refused = lab.postfix.send(sender, ["user-over@example.test"])
    refused_at = time.monotonic()
    assert not refused.accepted, "the message past the limit must be refused"
    assert 400 <= refused.code < 500, refused
    assert "4.7.1" in refused.message, refused
    # another sender is not affected
    assert lab.postfix.send(f"bounces+app2@{BOUNCE_DOMAIN}", ["other@example.test"]).accepted

    # after the window the same sender gets through again (bounded wait)
    deadline = refused_at + PER + 5
    while True:
        retry = lab.postfix.send(sender, ["user-over@example.test"])
        if retry.accepted:
            break
        assert 400 <= retry.code < 500, retry
        assert time.monotonic() < deadline, f"still refused {PER + 5:g}s after the first refusal: {retry}"
        time.sleep(0.5)
    lab.sink.wait_for_message("user-over@example.test")
    assert len(lab.sink.messages_to("user-over@example.test")) == 1
    lab.postfix.wait_queue_empty()
