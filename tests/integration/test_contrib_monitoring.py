"""contrib/: the Grafana dashboard's queries and the Prometheus alert rules, checked by promtool
(Debian's `prometheus` package, installed by .ci/system-deps), against a running sidecar's metrics."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.harness.api import ApiServer

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "contrib" / "grafana" / "postfix-sidecar.json"
ALERTS = ROOT / "contrib" / "prometheus" / "alerts.yml"
ALERT_TESTS = ROOT / "tests" / "data" / "prometheus" / "alerts_test.yml"
METRICS_DOC = ROOT / "docs" / "metrics.md"
PROMETHEUS_OWN = {"up"}  # made by Prometheus for every scrape target
CONFIG = """
[[ratelimit.rules]]
name = "per-user"
key = ["sasl_username"]
limits = [{ rate = 10, per = "1h" }]

[[webhooks.subscriptions]]
url = "http://127.0.0.1:9/hook"
name = "crm"
secret = "0123456789abcdef"
"""


def promtool(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("promtool")
    assert exe, "promtool missing: .ci/system-deps installs Debian's prometheus package"
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=60)


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) with Grafana's variables given values Prometheus accepts."""
    out = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$__rate_interval", "5m").replace("$job", ".*")
            out.append((panel["title"], expr))
    return out


def alert_queries() -> list[tuple[str, str]]:
    rules = yaml.safe_load(ALERTS.read_text())
    return [(r["alert"], r["expr"]) for g in rules["groups"] for r in g["rules"]]


def test_alert_rules_pass_promtool_check_and_unit_tests():
    out = promtool("check", "rules", str(ALERTS))
    assert out.returncode == 0 and "SUCCESS: 9 rules found" in out.stdout, out.stdout + out.stderr
    for _, rule in alert_queries():
        assert rule
    rules = yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"]
    assert all({"summary", "description", "runbook"} <= set(r["annotations"]) for r in rules)
    out = promtool("test", "rules", str(ALERT_TESTS))
    assert out.returncode == 0 and "SUCCESS" in out.stdout, out.stdout + out.stderr


def test_every_dashboard_query_parses(tmp_path):
    queries = dashboard_queries()
    assert len(queries) >= 25
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": f"dashboard:q{i}", "expr": e} for i, (_, e) in enumerate(queries)],
            }
        ]
    }
    (tmp_path / "dashboard.yml").write_text(yaml.safe_dump(rules))
    out = promtool("check", "rules", str(tmp_path / "dashboard.yml"))
    assert out.returncode == 0, out.stdout + out.stderr
    # and the check can fail: one broken query is refused
    rules["groups"][0]["rules"].append({"record": "dashboard:broken", "expr": "sum by (le (rate(x[5m]))"})
    (tmp_path / "broken.yml").write_text(yaml.safe_dump(rules))
    assert promtool("check", "rules", str(tmp_path / "broken.yml")).returncode != 0


@pytest.fixture(scope="module")
def scrape(tmp_path_factory):
    s = ApiServer(tmp_path_factory.mktemp("monitoring"), CONFIG).start()
    try:
        text = s.metrics()
    finally:
        s.stop()
    return text


def test_every_metric_used_is_exported_or_documented_as_conditional(scrape):
    out = subprocess.run(
        [shutil.which("promtool") or "promtool", "check", "metrics"],
        input=scrape,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "error" not in (out.stdout + out.stderr).lower(), out.stdout + out.stderr
    exported = {line.split("{")[0].split(" ")[0] for line in scrape.splitlines() if line and not line.startswith("#")}
    # a labelled family with no sample yet (no request, no bounce so far) is declared all the same
    suffixes = {"histogram": ("_bucket", "_sum", "_count")}  # a counter's TYPE line names it with _total
    for family, kind in re.findall(r"^# TYPE (sidecar_[a-z0-9_]+) (\w+)$", scrape, re.M):
        exported |= {family} | {family + s for s in suffixes.get(kind, ())}
    doc = METRICS_DOC.read_text()
    conditional = set(
        re.findall(r"^\| `(sidecar_[a-z0-9_]+)` \| [^|]*\|$", doc.split("## Conditional metrics")[1], re.M)
    )
    assert {"sidecar_ratelimit_redis_up", "sidecar_reputation_level", "sidecar_domain_health_score"} <= conditional
    used: dict[str, str] = {}
    for where, expr in dashboard_queries() + alert_queries():
        for name in re.findall(r"\b([a-z_][a-z0-9_]*)(?=\s*[{\[)]|\s*(?:==|>|<|$))", expr):
            if name.startswith("sidecar_") or name in PROMETHEUS_OWN:
                used.setdefault(name, where)
    assert len(used) >= 20, used
    unknown = {n: w for n, w in used.items() if n not in exported and n not in conditional and n not in PROMETHEUS_OWN}
    assert not unknown, f"neither exported by a running sidecar nor listed as conditional in docs/metrics.md: {unknown}"
    assert "sidecar_build_info" in exported and 'sidecar_webhook_pending{subscription="crm"} 0.0' in scrape


def test_every_served_family_is_documented(scrape):
    """What a running sidecar serves (scrape-time families included) is in docs/metrics.md."""
    doc = METRICS_DOC.read_text()
    families = {f for f in re.findall(r"^# TYPE (sidecar_[a-z0-9_]+) ", scrape, re.M) if not f.endswith("_created")}
    assert {"sidecar_webhook_pending", "sidecar_db_up", "sidecar_build_info"} <= families
    missing = sorted(f for f in families if f"`{f}" not in doc)
    assert not missing, f"add to docs/metrics.md: {missing}"
