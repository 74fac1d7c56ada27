"""The service's background domain checks: metrics, the API, and a webhook when a zone changes (knotd)."""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from sidecar.webhooks.signing import verify
from tests.harness.api import ApiServer, call
from tests.harness.dns import KnotServer
from tests.harness.sidecar import run_cli

SECRET, TOKEN = "whsec-domains", "tok-domains"


class Hooks:
    """A webhook receiver on loopback that keeps every signed delivery's payload."""

    def __init__(self) -> None:
        self.payloads: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                verify(SECRET, body, self.headers.get("Sidecar-Signature"), time.time())
                outer.payloads.append(json.loads(body))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *a: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def knot():
    server = KnotServer().start()
    yield server
    server.remove()


@pytest.fixture
def hooks():
    h = Hooks()
    yield h
    h.server.shutdown()


def config(resolver: str, hook_url: str, interval: str = "1s") -> str:
    return f"""
[[api.tokens]]
token = "{TOKEN}"
scope = "read"

[domain_health]
interval = "{interval}"
resolvers = ["{resolver}"]
timeout = "2s"
relay_ips = ["192.0.2.10"]
helo = "relay1.example.test"
dnsbl_zones = ["bl.test"]

[[domains]]
name = "example.test"
dkim_selectors = ["sel"]
envelope_domain = "example.test"

[webhooks]
poll_interval = "100ms"

[[webhooks.subscriptions]]
name = "domains"
url = "{hook_url}"
secret = "{SECRET}"
events = ["domain.check_changed"]
"""


def metric(text: str, name: str, **labels: str) -> float | None:
    for m in re.finditer(rf"^{name}\{{(.*)\}} (\S+)$", text, re.M):
        if dict(re.findall(r'(\w+)="([^"]*)"', m.group(1))) == labels:
            return float(m.group(2))
    return None


def wait_for(what: Any, timeout: float = 20.0) -> Any:
    t0 = time.monotonic()
    while True:
        value = what()
        if value:
            return value
        assert time.monotonic() - t0 < timeout, "timed out"
        time.sleep(0.1)


def test_a_changed_zone_shows_in_metrics_api_and_a_webhook(tmp_path, knot, hooks):
    server = ApiServer(tmp_path, config(knot.resolver, hooks.url)).start()
    try:
        wait_for(
            lambda: metric(server.metrics(), "sidecar_domain_check", domain="example.test", check="dmarc.record") == 0
        )
        text = server.metrics()
        assert metric(text, "sidecar_domain_check", domain="example.test", check="spf.relay:192.0.2.10") == 0
        assert metric(text, "sidecar_domain_check", domain="example.test", check="dnsbl:bl.test:192.0.2.10") == 2
        score = metric(text, "sidecar_domain_health_score", domain="example.test")
        assert score is not None and 80 <= score < 100

        # the first round reports what is wrong (the listing), not what passes
        first = wait_for(lambda: [p for p in hooks.payloads if p["data"]["check"] == "dnsbl:bl.test:192.0.2.10"])
        assert first[0]["type"] == "domain.check_changed"
        assert first[0]["data"]["state"] == "fail" and first[0]["data"]["previous"] is None
        assert not [p for p in hooks.payloads if p["data"]["state"] == "pass"]

        st, listing = call(server.url, "GET", "/domains", TOKEN)
        assert st == 200 and listing["items"][0]["domain"] == "example.test"
        assert listing["items"][0]["problems"] == ["dnsbl:bl.test:192.0.2.10"]
        st, one = call(server.url, "GET", "/domains/example.test", TOKEN)
        assert st == 200 and {c["check"]: c["state"] for c in one["checks"]}["dkim:sel"] == "pass"
        assert call(server.url, "GET", "/domains/other.test", TOKEN)[0] == 404

        knot.edit("example.test", "p=quarantine; sp=reject", "p=none; sp=none")
        knot.reload("example.test")
        wait_for(
            lambda: metric(server.metrics(), "sidecar_domain_check", domain="example.test", check="dmarc.record") == 1
        )
        changed = wait_for(lambda: [p for p in hooks.payloads if p["data"]["check"] == "dmarc.record"])
        data = changed[0]["data"]
        assert (data["domain"], data["state"], data["previous"]) == ("example.test", "warn", "pass")
        assert "p=quarantine" in data["fix"]
        assert metric(server.metrics(), "sidecar_domain_health_score", domain="example.test") < score

        # the change is an event too
        events = run_cli("events", "list", "--json", db=server.db).stdout.splitlines()
        assert any(json.loads(e)["reason"] == "dmarc.record" for e in events)
    finally:
        server.stop()


def test_relay_ips_are_required_when_postfix_does_not_say(tmp_path, knot, hooks):
    text = config(knot.resolver, hooks.url).replace('relay_ips = ["192.0.2.10"]\n', "")
    server = ApiServer(tmp_path, text)
    server_log = tmp_path / "serve.log"
    with pytest.raises(RuntimeError):
        server.start(timeout=15)
    lines = [line for line in server_log.read_text().splitlines() if "cannot start" in line]
    assert len(lines) == 1 and "domain_health.relay_ips: required with [[domains]]" in lines[0], server.log_tail()
