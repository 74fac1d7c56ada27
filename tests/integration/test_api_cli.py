"""The CLI's operator commands, on the database directly and through the API (same answers)."""

from __future__ import annotations

import json
import time

import pytest
from sqlalchemy import insert

from sidecar.store.db import make_engine
from sidecar.store.models import Event
from tests.harness.api import ApiServer
from tests.harness.sidecar import run_cli

TOKEN = "cli-token"
CONFIG = f"""
[[api.tokens]]
token = "{TOKEN}"
scope = "write"

[[ratelimit.rules]]
name = "per-user"
key = ["sasl_username"]
limits = [{{ rate = 5, per = "1m" }}]

[[webhooks.subscriptions]]
name = "crm"
url = "http://127.0.0.1:9/unused"
secret = "s"
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = ApiServer(tmp_path_factory.mktemp("cli"), CONFIG).start()
    yield s
    s.stop()


@pytest.fixture(params=["db", "api"])
def cli(request, server):
    def run(*args: str, check: bool = True):
        extra = ("--api", server.url, "--token", TOKEN) if request.param == "api" else ()
        return run_cli(*args, *extra, db=server.db, config=server.config, check=check)

    run.mode = request.param
    return run


def lines(out: str) -> list[dict]:
    return [json.loads(x) for x in out.splitlines() if x.strip()]


def test_suppressions_round_trip(cli, tmp_path):
    m = cli.mode
    out = lines(cli("suppressions", "add", f"{m}-one@cli.test", "--reason", "manual", "--json").stdout)
    assert out[0]["address"] == f"{m}-one@cli.test"
    rows = lines(cli("suppressions", "list", "--prefix", f"{m}-", "--json").stdout)
    assert [r["address"] for r in rows] == [f"{m}-one@cli.test"]
    assert "ADDRESS" in cli("suppressions", "list", "--prefix", f"{m}-").stdout
    why = lines(cli("suppressions", "why", f"{m}-one@cli.test", "--json").stdout)[0]
    assert why["suppressions"][0]["reason"] == "manual"
    assert "history:" in cli("suppressions", "why", f"{m}-one@cli.test").stdout
    assert cli("suppressions", "why", f"{m}-none@cli.test", check=False).returncode == 1
    csv_in = tmp_path / "in.csv"
    csv_in.write_text("address,reason\n" + "".join(f"{m}-bulk{i}@cli.test,bulk\n" for i in range(300)))
    assert lines(cli("suppressions", "import", str(csv_in), "--json").stdout)[0]["imported"] == 300
    out_csv = tmp_path / "out.csv"
    cli("suppressions", "export", str(out_csv), "--reason", "bulk")
    assert sum(1 for x in out_csv.read_text().splitlines() if x.startswith(f"{m}-bulk")) == 300
    res = cli("suppressions", "remove", f"{m}-one@cli.test", "--json")
    assert lines(res.stdout)[0]["removed"] is True
    assert cli("suppressions", "remove", f"{m}-one@cli.test", check=False).returncode == 1
    bad = cli("suppressions", "list", "--since", "whenever", check=False)
    assert bad.returncode == 2 and "since" in bad.stderr


def test_events_stats_limits_webhooks(cli, server):
    engine = make_engine(server.db)
    with engine.begin() as conn:
        conn.execute(
            insert(Event).values(
                created_at=time.time(),
                kind="bounce",
                address=f"{cli.mode}@ev.test",
                tenant="acme",
                category="mailbox-full",
            )
        )
    ev = lines(cli("events", "list", "--address", f"{cli.mode}@ev.test", "--json").stdout)
    assert [e["category"] for e in ev] == ["mailbox-full"]
    stats = lines(cli("stats", "--since", "1h", "--json").stdout)[0]
    assert any(e["tenant"] == "acme" for e in stats["events"])
    lim = lines(cli("limits", "show", "per-user:bob", "--json").stdout)
    assert (lim[0] if isinstance(lim[0], dict) else lim[0][0])["remaining"] == 5
    assert lines(cli("limits", "reset", "per-user:bob", "--json").stdout)[0]["reset"] is True
    st = lines(cli("webhooks", "status", "--json").stdout)[0]
    assert st["subscriptions"][0]["name"] == "crm"
    assert cli("webhooks", "deliveries", "--status", "dead", "--json").stdout == ""
    assert lines(cli("webhooks", "redeliver", "0", "--status", "dead", "--json").stdout)[0] == {"queued": 0}
