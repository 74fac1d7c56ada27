"""Domain-health checks against a real authoritative server (knotd on loopback, tests/data/dns/)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from sidecar.domains.dkim import check_dkim
from sidecar.domains.dmarc import check_dmarc
from sidecar.domains.lookup import Dns
from sidecar.domains.mail import check_mx, check_transport
from sidecar.domains.relay import check_dnsbl, check_rdns
from sidecar.domains.report import Target, check_domain
from sidecar.domains.results import State
from sidecar.domains.spf import check_spf
from tests.harness.dns import KnotServer

RELAY1, RELAY2, NO_PTR, CLEAN = "192.0.2.10", "192.0.2.11", "192.0.2.12", "192.0.2.13"


@pytest.fixture(scope="module")
def knot():
    server = KnotServer().start()
    yield server
    server.remove()


@pytest.fixture
def dns(knot):
    return Dns([knot.resolver], timeout=2.0)


@pytest.fixture
def silent():
    """A loopback UDP port that receives queries and never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    yield f"127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


def by_check(results):
    return {r.check: r for r in results}


def test_spf_include_chain_authorises_the_relay(dns):
    r = by_check(check_spf(dns, "example.test", [RELAY1, "203.0.113.50"], "relay1.example.test"))
    assert r["spf.record"].state is State.PASS
    assert r["spf.lookups"].state is State.PASS
    assert r["spf.lookups"].detail.startswith("3 DNS-querying terms")  # include, nested include, mx
    assert r["spf.all"].state is State.PASS
    assert r[f"spf.relay:{RELAY1}"].state is State.PASS
    other = r["spf.relay:203.0.113.50"]
    assert other.state is State.FAIL and "ip4:203.0.113.50" in other.fix


def test_spf_authorisation_through_an_include(dns):
    # 198.51.100.0/24 is only in _spf.example.test, reached through include:
    r = by_check(check_spf(dns, "example.test", ["198.51.100.7"]))
    assert r["spf.relay:198.51.100.7"].state is State.PASS


def test_spf_with_eleven_lookups_fails(dns):
    r = by_check(check_spf(dns, "toomany.example.test", [RELAY1]))
    assert r["spf.lookups"].state is State.FAIL
    assert "11 DNS-querying terms" in r["spf.lookups"].detail


def test_two_spf_records_and_plus_all_fail(dns):
    r = by_check(check_spf(dns, "bad.test", [RELAY1]))
    assert r["spf.record"].state is State.FAIL and "2 SPF records" in r["spf.record"].detail
    assert r["spf.all"].state is State.FAIL and "+all" in r["spf.all"].detail


def test_no_spf_record(dns):
    r = by_check(check_spf(dns, "mx1.example.test", [RELAY1]))
    assert r["spf.record"].state is State.FAIL and "v=spf1 ip4:192.0.2.10 -all" in r["spf.record"].fix


@pytest.mark.parametrize(
    ("selector", "state", "words"),
    [
        ("sel", State.PASS, "2048 bits"),
        ("k1024", State.WARN, "1024 bits"),
        ("weak", State.FAIL, "512 bits"),
        ("revoked", State.FAIL, "revoked"),
        ("missing", State.FAIL, "no DKIM key"),
    ],
)
def test_dkim_keys(dns, selector, state, words):
    (r,) = check_dkim(dns, "example.test", [selector])
    assert r.check == f"dkim:{selector}"
    assert r.state is state and words in r.detail


def test_dmarc_present_and_aligned(dns):
    r = by_check(check_dmarc(dns, "example.test", "example.test", "example.test"))
    assert r["dmarc.record"].state is State.PASS and "p=quarantine" in r["dmarc.record"].detail
    assert r["dmarc.rua"].state is State.PASS
    assert r["dmarc.alignment.spf"].state is State.PASS
    assert r["dmarc.alignment.dkim"].state is State.PASS


def test_dmarc_found_at_the_organisational_domain_and_strict_dkim_alignment(dns):
    # news.example.test has no _dmarc record: example.test's applies (sp=reject); adkim=s
    r = by_check(check_dmarc(dns, "news.example.test", "bounces.example.test", "example.test"))
    assert r["dmarc.record"].state is State.PASS and "sp=reject" in r["dmarc.record"].detail
    assert r["dmarc.alignment.spf"].state is State.PASS  # aspf=r: same organisational domain
    dkim = r["dmarc.alignment.dkim"]
    assert dkim.state is State.WARN and "adkim=s" in dkim.fix  # SPF still aligns


def test_dmarc_missing(dns):
    r = by_check(check_dmarc(dns, "bad.test", "bad.test", "bad.test"))
    assert r["dmarc.record"].state is State.FAIL
    assert '_dmarc.bad.test. TXT "v=DMARC1' in r["dmarc.record"].fix


def test_unaligned_envelope_and_signature_fail(dns):
    r = by_check(check_dmarc(dns, "example.test", "bounce.localhost", "bad.test"))
    assert r["dmarc.alignment.spf"].state is State.FAIL
    assert r["dmarc.alignment.dkim"].state is State.FAIL


def test_ptr_forward_confirmed_and_helo(dns):
    r = by_check(check_rdns(dns, RELAY1, "relay1.example.test"))
    assert [r[f"rdns.{c}:{RELAY1}"].state for c in ("ptr", "fcrdns", "helo")] == [State.PASS] * 3


def test_ptr_without_forward_confirmation(dns):
    r = by_check(check_rdns(dns, RELAY2, "relay1.example.test"))
    assert r[f"rdns.ptr:{RELAY2}"].state is State.PASS
    assert r[f"rdns.fcrdns:{RELAY2}"].state is State.FAIL and "192.0.2.99" in r[f"rdns.fcrdns:{RELAY2}"].detail
    assert r[f"rdns.helo:{RELAY2}"].state is State.WARN
    assert "smtp_helo_name = relay2.example.test" in r[f"rdns.helo:{RELAY2}"].fix


def test_missing_ptr(dns):
    r = by_check(check_rdns(dns, NO_PTR, ""))
    assert r[f"rdns.ptr:{NO_PTR}"].state is State.FAIL
    assert r[f"rdns.fcrdns:{NO_PTR}"].state is State.FAIL
    assert f"rdns.helo:{NO_PTR}" not in r  # no HELO name given: not checked


def test_blocklist_listing_error_code_and_not_listed(dns):
    listed = check_dnsbl(dns, RELAY1, "bl.test")
    assert listed.state is State.FAIL and "127.0.0.2" in listed.detail and "test listing" in listed.detail
    error = check_dnsbl(dns, NO_PTR, "bl.test")
    assert error.state is State.TEMPERROR and "not a listing" in error.detail
    assert check_dnsbl(dns, CLEAN, "bl.test").state is State.PASS


def test_blocklist_answers_are_cached_for_their_ttl(knot):
    now = [0.0]
    dns = Dns([knot.resolver], timeout=2.0, clock=lambda: now[0])
    assert check_dnsbl(dns, RELAY1, "bl.test").state is State.FAIL
    knot.edit("bl.test", "10.2.0.192     IN A   127.0.0.2", "10.2.0.192     IN A   127.0.0.9")
    knot.reload("bl.test")
    try:
        assert "127.0.0.2" in check_dnsbl(dns, RELAY1, "bl.test").detail  # within the 60 s TTL
        now[0] = 61.0
        assert "127.0.0.9" in check_dnsbl(dns, RELAY1, "bl.test").detail
    finally:
        knot.edit("bl.test", "10.2.0.192     IN A   127.0.0.9", "10.2.0.192     IN A   127.0.0.2")
        knot.reload("bl.test")


def test_mx_and_transport_records(dns):
    assert check_mx(dns, "example.test").state is State.PASS
    missing = check_mx(dns, "bad.test")
    assert missing.state is State.FAIL and "no MX" in missing.detail
    assert [r.state for r in check_transport(dns, "example.test")] == [State.PASS, State.PASS]
    assert [r.state for r in check_transport(dns, "bad.test")] == [State.WARN, State.WARN]


def test_a_server_that_does_not_answer_is_a_temporary_error(silent):
    dns = Dns([silent], timeout=0.3)
    report = check_domain(dns, Target("example.test", relay_ips=(RELAY1,), dkim_selectors=("sel",)))
    states = {r.state for r in report.results}
    assert states == {State.TEMPERROR}, report.to_dict()
    assert report.score is None and report.state is State.TEMPERROR


def test_whole_report_scores_good_above_bad(dns):
    good = check_domain(
        dns, Target("example.test", relay_ips=(RELAY1,), helo="relay1.example.test", dkim_selectors=("sel",))
    )
    assert good.state is State.PASS and good.score == 100
    bad = check_domain(dns, Target("bad.test", relay_ips=(NO_PTR,), dkim_selectors=("s1",)))
    assert bad.state is State.FAIL and bad.score is not None and bad.score < 40


def sidecar(*args):
    return subprocess.run(
        [sys.executable, "-m", "sidecar", "check-domain", *args], capture_output=True, text=True, timeout=60
    )


def test_cli_healthy_report_exits_0(knot):
    r = sidecar(
        "example.test", "--resolver", knot.resolver, "--relay-ip", RELAY1, "--helo", "relay1.example.test",
        "--dkim-selector", "sel", "--dnsbl", "bl.test", "--relay-ip", CLEAN,
    )  # fmt: skip
    assert r.returncode == 1, r.stdout  # RELAY1 is listed on bl.test
    assert "FAIL      dnsbl:bl.test:192.0.2.10" in r.stdout and "fix: " in r.stdout
    r = sidecar(
        "example.test", "--resolver", knot.resolver, "--relay-ip", RELAY1, "--helo", "relay1.example.test",
        "--dkim-selector", "sel", "--json",
    )  # fmt: skip
    assert r.returncode == 0, r.stdout
    report = json.loads(r.stdout)
    assert report["score"] == 100 and report["state"] == "pass"
    assert {c["check"] for c in report["checks"]} >= {
        "mx",
        "spf.relay:192.0.2.10",
        "dkim:sel",
        "rdns.fcrdns:192.0.2.10",
    }


def test_cli_problems_exit_1_and_silence_exits_75(knot, silent):
    r = sidecar("bad.test", "--resolver", knot.resolver, "--dkim-selector", "s1")
    assert r.returncode == 1
    assert "FAIL      spf.all" in r.stdout
    r = sidecar("example.test", "--resolver", silent, "--timeout", "0.3", "--dkim-selector", "sel", "--json")
    assert r.returncode == 75, r.stdout + r.stderr
    assert {c["state"] for c in json.loads(r.stdout)["checks"]} == {"temperror"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["not a domain"], "DOMAIN: 'not a domain' is not a domain name"),
        (["example.test", "--relay-ip", "192.0.2.300"], "--relay-ip: '192.0.2.300' is not an IP address"),
        (["example.test", "--resolver", "dns.example"], "--resolver: 'dns.example': expected an IP address"),
        (["example.test", "--resolver", "127.0.0.1:99999"], "expected a port from 1 to 65535"),
    ],
)
def test_cli_bad_input_is_one_line(args, message):
    r = sidecar(*args)
    assert r.returncode == 2
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1 and r.stdout == ""


def test_refused_is_a_temporary_error_not_a_failure(dns):
    # knotd serves no such zone and answers REFUSED (as a broken delegation's SERVFAIL would be)
    r = check_mx(dns, "example.org")
    assert r.state is State.TEMPERROR and "SERVFAIL or REFUSED" in r.detail


def test_spf_with_three_void_lookups_fails(dns):
    r = by_check(check_spf(dns, "void.example.test", [RELAY1]))
    assert r["spf.lookups"].state is State.FAIL
    assert "3 void lookups (limit 2)" in r["spf.lookups"].detail and "do not exist" in r["spf.lookups"].fix


def test_cli_takes_its_defaults_from_the_config(knot, tmp_path):
    conf = tmp_path / "sidecar.toml"
    conf.write_text(
        f'[domain_health]\nresolvers = ["{knot.resolver}"]\nrelay_ips = ["{RELAY2}"]\nhelo = "relay1.example.test"\n'
        '[[domains]]\nname = "example.test"\ndkim_selectors = ["k1024"]\n'
    )
    r = sidecar("example.test", "--config", str(conf), "--json")
    checks = {c["check"]: c["state"] for c in json.loads(r.stdout)["checks"]}
    assert checks["dkim:k1024"] == "warn" and checks[f"rdns.fcrdns:{RELAY2}"] == "fail"
    assert r.returncode == 1
    conf.write_text('[domain_health]\nresolvers = ["nowhere"]\n')
    r = sidecar("example.test", "--config", str(conf))
    assert r.returncode == 78 and r.stderr.count("\n") == 1 and "domain_health.resolvers[0]" in r.stderr
