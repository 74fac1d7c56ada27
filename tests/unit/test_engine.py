import logging

import pytest

from sidecar.config import load_config
from sidecar.policy.engine import GuardedDecider, PolicyEngine
from sidecar.policy.limits import RateLimiter
from sidecar.suppression.index import SuppressionIndex
from tests.harness.policy import rcpt

NOW = 1_795_000_000.0


def engine(tmp_path, toml="", allow=()):
    p = tmp_path / "c.toml"
    p.write_text(toml)
    cfg = load_config(p)
    index = SuppressionIndex(cfg.suppression.local_part_case_sensitive, cfg.suppression.allowlist or allow)
    return PolicyEngine(cfg, index, RateLimiter(cfg.ratelimit.rules)), index


def test_not_suppressed_is_dunno(tmp_path):
    e, _ = engine(tmp_path)
    assert e.decide(rcpt(recipient="ok@example.test"), NOW) == "DUNNO"


def test_suppressed_reply_names_reason_and_date(tmp_path):
    e, index = engine(tmp_path)
    index.put("hard1@example.test", "", "hard bounce", 1795650000.0, None)
    assert e.decide(rcpt(recipient="Hard1@EXAMPLE.test"), NOW) == (
        "550 5.1.1 <Hard1@EXAMPLE.test>: recipient suppressed (hard bounce 2026-11-25)"
    )


def test_case_sensitive_local_part(tmp_path):
    e, index = engine(tmp_path, "[suppression]\nlocal_part_case_sensitive = true\n")
    index.put("Hard1@example.test", "", "hard bounce", NOW, None)
    assert e.decide(rcpt(recipient="hard1@example.test"), NOW) == "DUNNO"
    assert e.decide(rcpt(recipient="Hard1@EXAMPLE.TEST"), NOW).startswith("550")


def test_expired_suppression_stops_applying(tmp_path):
    e, index = engine(tmp_path)
    index.put("a@example.test", "", "soft bounces", NOW - 10, NOW + 60)
    assert e.decide(rcpt(recipient="a@example.test"), NOW).startswith("550")
    assert e.decide(rcpt(recipient="a@example.test"), NOW + 61) == "DUNNO"


def test_tenant_scope_sasl_user_then_sender_domain(tmp_path):
    e, index = engine(tmp_path)
    index.put("a@example.test", "alice", "complaint", NOW, None)
    index.put("b@example.test", "shop.test", "complaint", NOW, None)
    assert e.decide(rcpt(recipient="a@example.test", sasl_username="alice"), NOW).startswith("550")
    assert e.decide(rcpt(recipient="a@example.test", sasl_username="bob"), NOW) == "DUNNO"
    assert e.decide(rcpt(recipient="b@example.test", sender="x@shop.test"), NOW).startswith("550")
    assert e.decide(rcpt(recipient="b@example.test", sender="x@other.test"), NOW) == "DUNNO"


def test_allowlist_overrides(tmp_path):
    e, index = engine(tmp_path, '[suppression]\nallowlist = ["vip@example.test", "@trusted.test"]\n')
    for a in ("vip@example.test", "x@trusted.test", "y@example.test"):
        index.put(a, "", "hard bounce", NOW, None)
    assert e.decide(rcpt(recipient="VIP@example.test"), NOW) == "DUNNO"
    assert e.decide(rcpt(recipient="x@Trusted.test"), NOW) == "DUNNO"
    assert e.decide(rcpt(recipient="y@example.test"), NOW).startswith("550")


def test_null_sender_skips_suppression(tmp_path):
    e, index = engine(tmp_path)
    index.put("a@example.test", "", "hard bounce", NOW, None)
    assert e.decide(rcpt(recipient="a@example.test", sender=""), NOW) == "DUNNO"


def test_custom_reply(tmp_path):
    e, index = engine(tmp_path, '[suppression]\nreply = "REJECT {address} is on the list ({reason})"\n')
    index.put("a@example.test", "", "complaint", NOW, None)
    assert e.decide(rcpt(recipient="a@example.test"), NOW) == "REJECT a@example.test is on the list (complaint)"


def test_guard_returns_safe_action_logs_and_counts(tmp_path, caplog):
    from sidecar import metrics

    class Boom:
        def decide(self, attrs, now):
            raise RuntimeError("kaboom")

    before = metrics.POLICY_ERRORS._value.get()
    g = GuardedDecider(Boom(), "DEFER_IF_PERMIT 4.3.0 try later", lambda: NOW)  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR):
        assert g(rcpt()) == "DEFER_IF_PERMIT 4.3.0 try later"
    assert "kaboom" in caplog.text and "Traceback" in caplog.text
    assert metrics.POLICY_ERRORS._value.get() == before + 1


@pytest.mark.parametrize("state", ["RCPT", "DATA"])
def test_rate_limit_message_count_checked_at_rcpt_and_data(tmp_path, state):
    e, _ = engine(
        tmp_path, '[[ratelimit.rules]]\nname = "per-user"\nkey = ["sasl_username"]\nlimits = [{rate = 2, per = "1m"}]\n'
    )
    req = rcpt(sasl_username="app", protocol_state=state)
    for i in range(2):
        assert e.decide(req, NOW) == "DUNNO"
        assert e.decide(dict(req, protocol_state="END-OF-MESSAGE", instance=f"i{i}"), NOW) == "DUNNO"
    assert e.decide(req, NOW) == ("DEFER_IF_PERMIT 4.7.1 rate limit per-user exceeded (2 per 1m), try again later")
    assert e.decide(req, NOW + 30) == "DUNNO"


def test_guard_counts_requests_and_latency_for_metrics(tmp_path):
    from prometheus_client import REGISTRY, generate_latest

    def sample(name, **labels):
        return REGISTRY.get_sample_value(name, labels) or 0.0

    e, index = engine(tmp_path)
    index.put("hard1@example.test", "", "hard bounce", NOW, None)
    g = GuardedDecider(e, "DUNNO", lambda: NOW)
    before = (
        sample("sidecar_policy_requests_total", state="RCPT", action="DUNNO"),
        sample("sidecar_policy_requests_total", state="RCPT", action="550"),
        sample("sidecar_policy_decision_seconds_count"),
    )
    assert g(rcpt(recipient="ok@example.test")) == "DUNNO"
    assert g(rcpt(recipient="hard1@example.test")).startswith("550 ")
    assert sample("sidecar_policy_requests_total", state="RCPT", action="DUNNO") == before[0] + 1
    assert sample("sidecar_policy_requests_total", state="RCPT", action="550") == before[1] + 1
    assert sample("sidecar_policy_decision_seconds_count") == before[2] + 2
    assert sample("sidecar_policy_decision_seconds_bucket", le="+Inf") == before[2] + 2
    text = generate_latest().decode()
    assert "# TYPE sidecar_policy_requests_total counter" in text
    assert "# TYPE sidecar_policy_decision_seconds histogram" in text
    assert 'sidecar_policy_decision_seconds_bucket{le="0.05"}' in text
    assert 'sidecar_policy_requests_created{action="DUNNO",state="RCPT"}' in text


def test_reply_names_the_tenant_when_only_global_suppressions_exist(tmp_path):
    e, index = engine(tmp_path, '[suppression]\nreply = "REJECT {address} ({tenant})"\n')
    index.put("hard1@example.test", "", "hard bounce", NOW, None)
    assert not index.tenant_scoped
    assert (
        e.decide(rcpt(recipient="hard1@example.test", sasl_username="", sender="a@Shop.test"), NOW)
        == "REJECT hard1@example.test (shop.test)"
    )
    index.put("only@shop.test", "app", "complaint", NOW, None)
    assert index.tenant_scoped
    assert e.decide(rcpt(recipient="only@shop.test", sasl_username="app"), NOW).startswith("REJECT only@shop.test")
    assert e.decide(rcpt(recipient="only@shop.test", sasl_username="other"), NOW) == "DUNNO"
