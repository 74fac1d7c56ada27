"""Domain health without a network: score, parsing, alignment, targets, change events, payloads."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from prometheus_client import REGISTRY
from twisted.internet.task import Clock

from sidecar.config import ConfigError, load_config
from sidecar.config.fields import nameserver
from sidecar.domains.dkim import _key, tags
from sidecar.domains.dmarc import aligned, org_domain
from sidecar.domains.events import event_row
from sidecar.domains.monitor import DomainMonitor, DomainSetupError, targets
from sidecar.domains.relay import dnsbl_name
from sidecar.domains.results import Report, Result, State, score
from sidecar.domains.spf import _all
from sidecar.webhooks.outbox import event_payload

P, W, F, T = State.PASS, State.WARN, State.FAIL, State.TEMPERROR
KEY_1024 = (
    "MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQC0Y1bT2ak70gCl26kW6ve7U/XUTugleU5DxWbfaGNJ1rpubOm6uQ8Gx1b8lR/D1IE4E47V5Ugul"
    "CPWHIkVHo1YZsCPOWEPGC3wRhsqFPoWbuHCnDZP0PMEgLB+vogxuHHMqfO0gbmIXKwy/B+uy8INXuXQV86Lq2vrUP8UUcNJIQIDAQAB"
)


def results(**states: State) -> list[Result]:
    return [Result(check.replace("__", ":").replace("_", "."), s, "") for check, s in states.items()]


def test_score_weights_and_scaling():
    assert score(results(mx=P, spf_record=P, dkim__s1=P, dmarc_record=P)) == 100
    # MX 10, SPF 25, DKIM 20, DMARC 20 answered (75): a failing DKIM key loses 20 of them
    assert score(results(mx=P, spf_record=P, dkim__s1=F, dmarc_record=P)) == round(100 * 55 / 75)
    # a warning counts half; checks of one group share its weight
    assert score(results(spf_record=P, spf_all=W)) == 75
    # a temporary error is left out, not counted as a failure
    assert score(results(mx=P, spf_record=T)) == 100
    assert score(results(mx=T)) is None


def test_report_state_order():
    assert Report("d", results(mx=P, spf_record=W)).state is W
    assert Report("d", results(mx=T, spf_record=W)).state is T
    assert Report("d", results(mx=T, spf_record=F)).state is F
    assert Report("d", results(mx=P)).state is P


@pytest.mark.parametrize(
    ("record", "state"),
    [
        ("v=spf1 ip4:192.0.2.1 -all", P),
        ("v=spf1 ip4:192.0.2.1 ~all", P),
        ("v=spf1 ip4:192.0.2.1 ?all", W),
        ("v=spf1 ip4:192.0.2.1", W),
        ("v=spf1 redirect=_spf.example.com", P),
        ("v=spf1 +all", F),
        ("v=spf1 a mx all", F),
    ],
)
def test_spf_all_qualifier(record, state):
    assert _all([record]).state is state


def test_dnsbl_query_names():
    assert dnsbl_name("192.0.2.10", "bl.test") == "10.2.0.192.bl.test"
    assert dnsbl_name("2001:db8::1", "bl.test.") == "1.0.0.0." + "0.0.0.0." * 5 + "8.b.d.0.1.0.0.2.bl.test"


def test_dkim_tags_and_keys():
    assert tags("v=DKIM1; k=rsa; p=AB CD\t EF;t=y:s") == {"v": "DKIM1", "k": "rsa", "p": "ABCDEF", "t": "y:s"}
    assert _key("rsa", KEY_1024)[0] is W
    assert _key("rsa", "not base64!")[0] is F
    assert _key("rsa", "AAAA")[0] is F
    assert _key("ed25519", "A" * 43 + "=")[0] is P
    assert _key("dsa", KEY_1024)[0] is F


def test_organisational_domain_and_alignment():
    assert org_domain("mail.example.co.uk") == "example.co.uk"
    assert org_domain("Bounces.Example.COM.") == "example.com"
    assert aligned("bounces.example.com", "example.com", "r")
    assert not aligned("bounces.example.com", "example.com", "s")
    assert not aligned("example.net", "example.com", "r")
    assert not aligned("a.example.co.uk", "b.co.uk", "r")


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("127.0.0.1", ("127.0.0.1", 53)),
        ("127.0.0.1:5353", ("127.0.0.1", 5353)),
        ("[::1]:53", ("::1", 53)),
        ("::1", ("::1", 53)),
    ],
)
def test_nameserver(text, want):
    assert nameserver(text) == want


def write(tmp_path, text):
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('[[domains]]\nname = "not a domain"\n', "domains[0].name:"),
        ('[[domains]]\nname = "example.com"\nenvelope_domain = "x y"\n', "domains[0].envelope_domain:"),
        ('[[domains]]\nnam = "example.com"\n', "domains[0].nam: unknown key"),
        ('[domain_health]\nrelay_ips = ["192.0.2.300"]\n', "domain_health.relay_ips[0]:"),
        ('[domain_health]\nresolvers = ["resolver.example"]\n', "domain_health.resolvers[0]:"),
        ('[domain_health]\ninterval = "0s"\n', "domain_health.interval:"),
        (
            '[[domains]]\nname = "a.example"\n[[domains]]\nname = "A.example."\n',
            "domains[1].name: 'a.example' is already",
        ),
    ],
)
def test_config_errors_name_the_key(tmp_path, text, error):
    with pytest.raises(ConfigError, match=f"^{error}".replace("[", r"\[").replace("]", r"\]")):
        load_config(write(tmp_path, text))


def test_targets_take_postfix_defaults(tmp_path):
    cfg = load_config(
        write(tmp_path, '[postfix]\nbounce_domain = "b.example.com"\n[[domains]]\nname = "example.com"\n')
    )
    pf = {"smtp_helo_name": "relay.example.com", "smtp_bind_address": "192.0.2.7", "smtp_bind_address6": ""}
    (t,) = targets(cfg, lambda: pf)
    assert (t.relay_ips, t.helo, t.envelope_domain) == (("192.0.2.7",), "relay.example.com", "b.example.com")
    with pytest.raises(DomainSetupError, match=r"^domain_health.relay_ips: required with \[\[domains\]\]"):
        targets(cfg, lambda: {"smtp_helo_name": "relay.example.com"})
    assert targets(load_config(None), lambda: {}) == []


def gauge(domain, check):
    return REGISTRY.get_sample_value("sidecar_domain_check", {"domain": domain, "check": check})


def test_monitor_events_only_on_changes(tmp_path):
    cfg = load_config(write(tmp_path, '[[domains]]\nname = "unit.example"\n'))
    m = DomainMonitor(cfg, None, Clock(), None)  # type: ignore[arg-type]

    def report(**states):
        return Report("unit.example", [Result(c, s, f"{c} is {s.value}", "do this") for c, s in states.items()])

    # first round: only what does not pass is news
    rows = m.apply(report(mx=P, **{"dkim:s1": F}))
    assert [(r["reason"], r["status"], r["action"]) for r in rows] == [("dkim:s1", "fail", "")]
    assert gauge("unit.example", "dkim:s1") == 2 and gauge("unit.example", "mx") == 0
    assert m.apply(report(mx=P, **{"dkim:s1": F})) == []
    # a temporary error changes nothing, and the state after it is compared with the one before
    assert m.apply(report(mx=T, **{"dkim:s1": T})) == []
    assert gauge("unit.example", "mx") == 3
    rows = m.apply(report(mx=W, **{"dkim:s1": F}))
    assert [(r["reason"], r["status"], r["action"]) for r in rows] == [("mx", "warn", "pass")]
    # a check that disappears leaves no stale gauge
    m.apply(report(mx=W))
    assert gauge("unit.example", "dkim:s1") is None
    # events that could not be written are found again next round
    rows = m.apply(report(mx=F))
    assert [r["status"] for r in rows] == ["fail"]
    m.forget(rows)
    assert [(r["status"], r["action"]) for r in m.apply(report(mx=F))] == [("fail", "warn")]
    # before the previous states are read: metrics, but no events and nothing remembered
    assert m.apply(report(mx=P), record=False) == [] and gauge("unit.example", "mx") == 0
    assert [r["action"] for r in m.apply(report(mx=P))] == ["fail"]


def test_webhook_payload_of_a_change():
    row = SimpleNamespace(**{**event_row("example.com", "spf.all", "fail", "pass", "d", "f", 61), "id": 7})
    etype, order, payload = event_payload(row)
    assert etype == "domain.check_changed" and order == "domain:example.com:spf.all"
    assert payload["id"] == "evt_e7"
    assert payload["data"] == {
        "domain": "example.com",
        "check": "spf.all",
        "state": "fail",
        "previous": "pass",
        "detail": "d",
        "fix": "f",
        "score": 61,
        "event_id": 7,
    }
    json.dumps(payload)
