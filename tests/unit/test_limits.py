from sidecar.config import LimitConfig, RateLimitRule
from sidecar.policy.limits import RateLimiter
from tests.harness.policy import rcpt

NOW = 1_795_000_000.0


def rule(**kw):
    base = dict(name="r", key=("sender",), limits=(LimitConfig(2, 60.0, 0),), count="recipients")
    base.update(kw)
    return RateLimitRule(**base)


def test_recipients_counted_per_rcpt():
    lim = RateLimiter([rule()])
    req = rcpt(sender="a@shop.test")
    assert lim.check(req, "RCPT", NOW) is None
    assert lim.check(req, "RCPT", NOW) is None
    assert lim.check(req, "RCPT", NOW)[0] == "r"
    assert lim.check(rcpt(sender="b@shop.test"), "RCPT", NOW) is None


def test_several_windows_all_must_admit():
    lim = RateLimiter([rule(limits=(LimitConfig(10, 60.0, 0), LimitConfig(3, 86400.0, 0)))])
    req = rcpt(sender="a@shop.test")
    assert [lim.check(req, "RCPT", NOW) is None for _ in range(4)] == [True, True, True, False]
    assert "3 per 1d" in lim.check(req, "RCPT", NOW + 120)[2]


def test_message_counted_once_per_instance_at_end_of_message():
    lim = RateLimiter([rule(count="messages", limits=(LimitConfig(1, 60.0, 0),))])
    req = rcpt(sender="a@shop.test", instance="abc")
    assert lim.check(req, "RCPT", NOW) is None
    assert lim.check(req, "RCPT", NOW) is None  # RCPT only checks
    assert lim.check(req, "DATA", NOW) is None
    lim.check(req, "END-OF-MESSAGE", NOW)
    lim.check(req, "END-OF-MESSAGE", NOW)  # same instance: not counted twice
    assert lim.check(dict(req, instance="def"), "DATA", NOW) is not None
    assert lim.check(dict(req, instance="def"), "DATA", NOW + 60) is None


def test_keys_domains_and_client_prefix():
    lim = RateLimiter(
        [
            rule(key=("sender_domain", "recipient_domain")),
            rule(name="net", key=("client_address",), ipv4_prefix=24, ipv6_prefix=48),
        ]
    )
    assert lim.rules[0].key_value(rcpt(sender="A@Shop.Test", recipient="x@Example.test")) == "r:shop.test|example.test"
    assert lim.rules[1].key_value(rcpt(client_address="192.0.2.77")) == "net:192.0.2.0/24"
    assert lim.rules[1].key_value(rcpt(client_address="2001:db8:1:2::5")) == "net:2001:db8:1::/48"


def test_missing_key_part_and_exemptions_skip_rule():
    lim = RateLimiter(
        [
            rule(key=("sasl_username",), exempt=("root",)),
            rule(name="net", key=("client_address",), exempt=("10.0.0.0/8",)),
        ]
    )
    assert lim.rules[0].key_value(rcpt(sasl_username="")) is None
    assert lim.rules[0].key_value(rcpt(sasl_username="ROOT")) is None
    assert lim.rules[1].key_value(rcpt(client_address="10.1.2.3")) is None
    assert lim.rules[1].key_value(rcpt(client_address="192.0.2.1")) == "net:192.0.2.1"


def test_dirty_keys_save_and_load_roundtrip():
    lim = RateLimiter([rule()])
    req = rcpt(sender="a@shop.test")
    lim.check(req, "RCPT", NOW)
    lim.check(req, "RCPT", NOW)
    saved = lim.take_dirty(NOW)
    assert list(saved) == ["r:a@shop.test#0"] and lim.take_dirty(NOW) == {}
    fresh = RateLimiter([rule()])
    assert fresh.load([(k, v) for k, v in saved.items()], NOW) == 1
    assert fresh.check(req, "RCPT", NOW) is not None
    fresh.reset("r:a@shop.test")
    assert fresh.check(req, "RCPT", NOW) is None
    assert fresh.prune(NOW + 3600) == 1


def test_refusals_aggregate_per_key_and_minute():
    from sidecar.policy.refusals import RefusalLog

    log = RefusalLog()
    t = 1_795_000_020.0
    for _ in range(3):
        log("r", "r:a@shop.test", t)
    log("r", "r:b@shop.test", t + 1)
    assert log.take_completed(t) == []  # minute not over yet
    rows = log.take_completed(t + 60)
    assert sorted((r["address"], r["diagnostic"].split()[0]) for r in rows) == [
        ("a@shop.test", "3"),
        ("b@shop.test", "1"),
    ]
    log.put_back(rows)
    assert len(log.take_completed(t + 60)) == 2


def test_dirty_keys_swap_and_put_back_after_a_failed_save():
    lim = RateLimiter([rule(limits=(LimitConfig(10, 60.0, 0), LimitConfig(100, 3600.0, 0)))])
    lim.check(rcpt(sender="a@shop.test"), "RCPT", NOW)
    keys = lim.take_dirty_keys()
    assert keys == {"r:a@shop.test"} and lim.dirty == set()
    lim.check(rcpt(sender="b@shop.test"), "RCPT", NOW)
    items = lim.dirty_items(keys, NOW)
    assert sorted(items) == ["r:a@shop.test#0", "r:a@shop.test#1"]
    assert items["r:a@shop.test#0"] == NOW + 6.0 and items["r:a@shop.test#1"] == NOW + 36.0
    assert lim.dirty_items(keys, NOW + 60)["r:a@shop.test#0"] is None  # lapsed: delete the row
    lim.mark_dirty(keys)  # the save failed: saved again next time
    assert lim.dirty == {"r:a@shop.test", "r:b@shop.test"}


def test_prune_in_slices():
    lim = RateLimiter([rule()])
    for i in range(25):
        lim.check(rcpt(sender=f"s{i}@shop.test"), "RCPT", NOW + i)
    steps = lim.prune_steps(NOW + 100, step=10)
    assert next(steps) == 10 and len(lim.state) == 15
    lim.check(rcpt(sender="s24@shop.test"), "RCPT", NOW + 80)  # touched between slices: kept
    assert sum(steps) == 14 and list(lim.state) == ["r:s24@shop.test"]


def test_inlined_gcra_matches_the_pure_algorithm():
    from sidecar import ratelimit

    windows = (LimitConfig(3, 10.0, 2), LimitConfig(7, 60.0, 0))
    lim = RateLimiter([rule(limits=windows)])
    ws = [ratelimit.Window(w.rate, w.per, w.burst) for w in windows]
    tats: list = [None, None]
    req = rcpt(sender="a@shop.test")
    for step in range(40):
        now = NOW + step * 1.7
        verdicts = [ratelimit.check(w, tats[i], now, consume=False) for i, w in enumerate(ws)]
        expect = all(v.allowed for v in verdicts)
        assert (lim.check(req, "RCPT", now) is None) == expect
        if expect:
            tats = [ratelimit.force(w, tats[i], now) for i, w in enumerate(ws)]
        assert lim.state.get("r:a@shop.test") == (tuple(tats) if tats[0] is not None else None)


def test_verdicts_match_the_reference_gcra_over_random_sequences():
    """RateLimiter.check against a model that steps each window with sidecar.ratelimit.check."""
    import random

    from sidecar import ratelimit

    requests = {s: rcpt(sender=s) for s in ("a@x.test", "b@x.test")}
    for seed in range(200):
        rnd = random.Random(seed)
        limits = tuple(
            LimitConfig(rnd.randint(1, 5), rnd.choice([1.0, 7.5, 60.0]), rnd.randint(0, 3))
            for _ in range(rnd.randint(1, 3))
        )
        lim = RateLimiter([rule(limits=limits)])
        windows = [ratelimit.Window(w.rate, w.per, w.burst) for w in limits]
        model: dict[str, list[float | None]] = {}
        now = NOW
        for _ in range(60):
            now += rnd.choice([0.0, 0.0, 0.01, 0.3, 1.0, 5.0, 30.0])
            sender = rnd.choice(sorted(requests))
            tats = model.setdefault(sender, [None] * len(windows))
            verdicts = [ratelimit.check(w, t, now) for w, t in zip(windows, tats, strict=True)]
            allowed = all(v.allowed for v in verdicts)
            if allowed:
                model[sender] = [v.tat for v in verdicts]
            got = lim.check(requests[sender], "RCPT", now)
            assert (got is None) == allowed, (seed, now, sender)
            assert list(lim.state.get(f"r:{sender}", (None,) * len(windows))) == model[sender]
