"""The policy path at each reputation level, and what it counts (no reactor, no database)."""

import pytest

from sidecar.config import load_config
from sidecar.policy.engine import PolicyEngine
from sidecar.policy.limits import RateLimiter
from sidecar.reputation.levels import HOUR
from sidecar.reputation.live import HOLD_ACTION, PAUSE_ACTION, LiveReputation
from sidecar.suppression.index import SuppressionIndex
from tests.harness.policy import rcpt

NOW = 1_795_000_000.0
RULE = '[[ratelimit.rules]]\nname = "per-user"\nkey = ["sasl_username"]\nlimits = [{rate = 1, per = "1h", burst = 7}]\n'


def make(tmp_path, toml=RULE):
    p = tmp_path / "c.toml"
    p.write_text(toml)
    cfg = load_config(p)
    live = LiveReputation("node-a", cfg.reputation.throttle_factor)
    index = SuppressionIndex(False, ())
    return PolicyEngine(cfg, index, RateLimiter(cfg.ratelimit.rules), reputation=live), live, index


def eom(**over):
    return rcpt(protocol_state="END-OF-MESSAGE", **over)


def test_normal_tenant_counts_accepted_recipients_and_queue_id(tmp_path):
    e, live, _ = make(tmp_path)
    assert e.decide(rcpt(sasl_username="alice"), NOW) == "DUNNO"
    assert e.decide(eom(sasl_username="alice", recipient_count="3", queue_id="4Xq1"), NOW) == "DUNNO"
    assert e.decide(eom(sasl_username="", sender="a@Shop.test", recipient_count="2", queue_id=""), NOW) == "DUNNO"
    counts, messages = live.take()
    hour = int(NOW // HOUR)
    assert counts == {("alice", hour): (3, 0, 0), ("shop.test", hour): (2, 0, 0)}
    assert messages == [("4Xq1", "alice", "node-a", False, NOW)]
    assert live.take() == ({}, [])


def test_pause_defers_at_rcpt_before_anything_else(tmp_path):
    e, live, index = make(tmp_path)
    index.put("gone@example.test", "", "hard bounce", NOW, None)
    live.levels = {"alice": 5}
    assert e.decide(rcpt(sasl_username="alice", recipient="gone@example.test"), NOW) == PAUSE_ACTION
    assert PAUSE_ACTION == "DEFER_IF_PERMIT 4.7.1 sending paused"
    assert e.decide(rcpt(sasl_username="bob"), NOW) == "DUNNO"


def test_hold_at_end_of_message_records_held_queue_id(tmp_path):
    e, live, _ = make(tmp_path)
    live.levels = {"alice": 4}
    assert e.decide(rcpt(sasl_username="alice"), NOW) == "DUNNO"  # accepted at RCPT
    assert e.decide(eom(sasl_username="alice", recipient_count="1", queue_id="HELD1"), NOW) == HOLD_ACTION
    assert HOLD_ACTION.startswith("HOLD ")
    assert e.decide(eom(sasl_username="bob", recipient_count="1", queue_id="FREE1"), NOW) == "DUNNO"
    _, messages = live.take()
    assert [(q, held) for q, _, _, held, _ in messages] == [("HELD1", True), ("FREE1", False)]


def sends(e, user, n, count="messages"):
    """The answers to ``n`` one-recipient messages (RCPT, then END-OF-MESSAGE when let through)."""
    out = []
    for i in range(n):
        a = e.decide(rcpt(sasl_username=user, recipient=f"r{i}@example.test", instance=f"{user}{i}"), NOW)
        out.append(a)
        if a == "DUNNO":
            e.decide(eom(sasl_username=user, instance=f"{user}{i}", recipient_count="1"), NOW)
    return out


@pytest.mark.parametrize("count", ["messages", "recipients"])
def test_throttle_cuts_the_rate_budget_to_a_quarter(tmp_path, count):
    e, live, _ = make(tmp_path, RULE.replace("\nlimits", f'\ncount = "{count}"\nlimits'))
    live.levels = {"alice": 3}
    answers = sends(e, "alice", 4)
    assert answers[:2] == ["DUNNO", "DUNNO"]  # a burst of 8 / 4 units each = 2
    assert answers[2].startswith("DEFER_IF_PERMIT 4.7.1 rate limit per-user")
    assert sends(e, "bob", 9) == ["DUNNO"] * 8 + [answers[2].replace("alice", "bob")]  # level 1: the whole budget


def test_disabled_reputation_counts_nothing(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[reputation]\nenabled = false\n")
    cfg = load_config(p)
    e = PolicyEngine(cfg, SuppressionIndex(False, ()), RateLimiter(()))
    assert e.decide(eom(sasl_username="alice", recipient_count="3", queue_id="Q"), NOW) == "DUNNO"


class SharedLimiter:
    """A shared backend's shape: every check answers later (a Deferred); ``budget`` units in all."""

    def __init__(self, budget):
        self.budget = budget
        self.calls = 0

    def __bool__(self):
        return True

    def check(self, attrs, state, now):
        from twisted.internet.defer import succeed

        if state != "RCPT":
            return succeed(None)
        self.calls += 1
        self.budget -= 1
        return succeed(None if self.budget >= 0 else ("shared", "k", "DEFER_IF_PERMIT 4.7.1 over"))


def test_throttle_with_a_shared_backend_chains_the_extra_units(tmp_path):
    cfg_path = tmp_path / "c.toml"
    cfg_path.write_text("")
    cfg = load_config(cfg_path)
    live = LiveReputation("n", 4)
    live.levels = {"alice": 3}
    shared = SharedLimiter(6)
    e = PolicyEngine(cfg, SuppressionIndex(False, ()), shared, reputation=live)  # type: ignore[arg-type]
    got = []
    for i in range(2):
        e.decide(rcpt(sasl_username="alice", recipient=f"r{i}@example.test"), NOW).addCallback(got.append)
    assert got == ["DUNNO", "DEFER_IF_PERMIT 4.7.1 over"]  # 4 units, then 2 left of the next 4
    assert shared.calls == 7  # stops at the first refusal
