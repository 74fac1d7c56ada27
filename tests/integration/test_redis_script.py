"""The GCRA script on a real Redis decides as the in-memory limiter does, decision for decision."""

import random

import pytest

from sidecar.config import LimitConfig, RateLimitRule
from sidecar.policy.limits import RateLimiter
from sidecar.policy.redis_script import CHECK, CONSUME, FORCE, entry_code, gcra_script, redis_key
from tests.harness.policy import rcpt

redis = pytest.importorskip("redis")

RULES = [
    RateLimitRule(
        name="per-sender",
        key=("sender",),
        count="recipients",
        limits=(LimitConfig(5, 86400.0, 2), LimitConfig(3, 3600.0, 0)),
    ),
    RateLimitRule(name="per-domain", key=("sender_domain",), count="recipients", limits=(LimitConfig(8, 86400.0, 0),)),
    RateLimitRule(name="messages", key=("sender",), count="messages", limits=(LimitConfig(2, 86400.0, 1),)),
]


def script_decisions(r, script, planner, decisions):
    """One batch as RedisRateLimiter sends it; per decision (rule name, key, window) of its refusal, or None."""
    keys, args, entries = [], [], []
    for attrs, state in decisions:
        codes, mine = b"", []
        if state == "END-OF-MESSAGE" and not planner.first_commit(attrs):
            args.append(codes)
            entries.append(mine)
            continue
        for i, rule in enumerate(planner.rules):
            if state == "END-OF-MESSAGE":
                mode = FORCE if rule.messages else None
            elif rule.messages:
                mode = CHECK if state in ("RCPT", "DATA") else None
            else:
                mode = CONSUME if state == "RCPT" else None
            key = rule.key_value(attrs) if mode is not None else None
            if key is None:
                continue
            codes += entry_code(i, mode)
            keys += [redis_key(key, n) for n in range(len(rule.windows))]
            mine.append((rule, key))
        args.append(codes)
        entries.append(mine)
    res = r.eval(script, len(keys), *keys, *args)
    out = [None] * len(decisions)
    for j in range(0, len(res), 3):
        rule, key = entries[res[j] - 1][res[j + 1] - 1]
        out[res[j] - 1] = (rule.name, key, res[j + 2] - 1)
    return out


def test_batches_of_mixed_decisions_match_the_in_memory_limiter(redis_server):
    r = redis.Redis.from_url(redis_server.url)
    r.flushdb()
    local, planner = RateLimiter(RULES), RateLimiter(RULES)
    script = gcra_script(local.rules)
    rng = random.Random(17)
    secs, micros = r.time()
    now = secs + micros / 1e6  # the windows are hours and days long: the ms the batches take do not matter
    senders = [f"u{i}@{d}" for i in range(3) for d in ("a.test", "b.test")]
    for batch_no in range(12):
        decisions = []
        for n in range(rng.randint(1, 30)):
            state = rng.choice(["RCPT", "RCPT", "RCPT", "DATA", "END-OF-MESSAGE"])
            decisions.append((rcpt(sender=rng.choice(senders), instance=f"m{batch_no}-{n % 4}"), state))
        got = script_decisions(r, script, planner, decisions)
        want = []
        for attrs, state in decisions:
            hit = local.check(attrs, state, now)
            if hit is None:
                want.append(None)
                continue
            rule = local.rule_for(hit[1])
            window = next(i for i, w in enumerate(rule.windows) if f"{w.rate} per" in hit[2])
            want.append((hit[0], hit[1], window))
        assert got == want, batch_no
    assert any(g is not None for g in got)
    # what Redis stored is what the in-memory limiter holds: the same TAT per key and window
    for key, tats in local.state.items():
        for n, tat in enumerate(tats):
            stored = r.get(redis_key(key, n))
            assert stored is not None and float(stored) == pytest.approx(tat, abs=1.0)
