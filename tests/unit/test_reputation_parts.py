"""Reputation's small parts: the original queue id of a DSN, what counts, the bounded metrics."""

from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from sidecar.bounce.derive import EventKind, Finding
from sidecar.config import ConfigError, load_config
from sidecar.reputation.attribution import kind_of, original_queue_id
from sidecar.reputation.evaluate import Evaluation
from sidecar.reputation.levels import Assessment
from sidecar.reputation.service import publish

DSN = Path(__file__).resolve().parents[1] / "data" / "bounces" / "postfix" / "dsn-failed-550-5.1.1.eml"


def test_original_queue_id_of_a_postfix_dsn():
    assert original_queue_id(DSN.read_bytes()) == "8AFA3224909"
    assert original_queue_id(b"Subject: hi\r\n\r\nX-Postfix-Queue-ID: 4Xyz12AbC\r\n") == "4Xyz12AbC"
    assert original_queue_id(b"Subject: hi\n\nno id here\n") == ""
    assert original_queue_id(b"X-Postfix-Queue-ID: bad id; drop table\n") == ""


def finding(kind, category, hard, status="5.1.1"):
    return Finding("a@example.test", "", kind, category, None, hard, status)


def test_only_invalid_recipient_hard_bounces_and_complaints_count():
    assert kind_of(finding(EventKind.BOUNCE, "invalid-recipient", True)) == "hard_bounces"
    assert kind_of(finding(EventKind.BOUNCE, "dns", True)) == "hard_bounces"
    assert kind_of(finding(EventKind.COMPLAINT, "complaint", None, None)) == "complaints"
    assert kind_of(finding(EventKind.BOUNCE, "block", True, "5.7.1")) is None  # the receiver's view of the relay
    assert kind_of(finding(EventKind.BOUNCE, "mailbox-full", True, "5.2.2")) is None
    assert kind_of(finding(EventKind.BOUNCE, "invalid-recipient", False)) is None  # soft
    assert kind_of(finding(EventKind.BOUNCE, "invalid-recipient", True, "4.1.1")) is None  # temporary
    assert kind_of(finding(EventKind.DELAY, "invalid-recipient", True)) is None


def gauge(name, **labels):
    return REGISTRY.get_sample_value(name, labels)


def test_metrics_carry_only_tenants_above_normal_and_the_top_n():
    def a(sends, rate):
        return Assessment(sends, int(sends * rate), 0, rate if sends >= 200 else None, None, False)

    ev = Evaluation(
        [], {"bad": (4, a(1000, 0.1)), "big": (1, a(90000, 0.01)), "mid": (1, a(500, 0.0)), "tiny": (1, a(10, 0.0))}
    )
    publish(ev, 0)
    assert gauge("sidecar_reputation_level", tenant="bad") == 4
    assert gauge("sidecar_reputation_rate", tenant="bad", kind="bounce") == 0.1
    assert gauge("sidecar_reputation_rate", tenant="bad", kind="complaint") is None  # under the minimum volume
    assert gauge("sidecar_reputation_level", tenant="big") is None
    publish(ev, 1)
    assert gauge("sidecar_reputation_level", tenant="big") == 1
    assert gauge("sidecar_reputation_level", tenant="mid") is None
    publish(Evaluation([], {}), 0)
    assert gauge("sidecar_reputation_level", tenant="bad") is None  # left: its series goes


@pytest.mark.parametrize(
    "text,message",
    [
        ('window = "8d"', "reputation.window: expected at most reputation.retention"),
        ("release_to = 4", "reputation.release_to: expected 1, 2 or 3"),
        ("warn_bounce = 2", "reputation.warn_bounce"),
        ('cooldown = "0s"', "reputation.cooldown"),
        ("nonsense = 1", "reputation.nonsense"),
    ],
)
def test_bad_reputation_settings_name_the_key(tmp_path, text, message):
    p = tmp_path / "c.toml"
    p.write_text(f"[reputation]\n{text}\n")
    with pytest.raises(ConfigError, match=message):
        load_config(p)
