"""Several relays on one PostgreSQL and one Redis: shared suppressions and rate limits."""

import json
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.harness.policy import rcpt
from tests.harness.sidecar import BIN, SidecarProcess, run_cli

TOKEN = "cluster-token"
DSN = Path(__file__).resolve().parents[1] / "data" / "bounces" / "postfix" / "dsn-failed-550-5.1.1.eml"


SENDER_DOMAIN_RULE = """
[[ratelimit.rules]]
name = "per-sender-domain"
key = ["sender_domain"]
count = "recipients"
limits = [{ rate = 30, per = "1h", burst = 5 }]
"""


VERP_KEY = "cluster-verp-key"


def cluster_config(redis_url: str, redis_timeout: str = "50ms", extra: str = "") -> str:
    return f"""
[database]
sync_interval = "250ms"

[ingest]
verp_key = "{VERP_KEY}"

[[api.tokens]]
token = "{TOKEN}"
scope = "write"

[ratelimit]
backend = "redis"
redis_url = "{redis_url}"
redis_timeout = "{redis_timeout}"

[[ratelimit.rules]]
name = "per-app"
key = ["sasl_username"]
count = "recipients"
limits = [{{ rate = 50, per = "1h", burst = 10 }}]
{extra}"""


@pytest.fixture
def nodes(request, tmp_path, pg_url, redis_server):
    # A Redis answer later than redis_timeout lets the fallback decide that request (on purpose:
    # no request waits on Redis), so a test of the shared count alone uses a generous timeout.
    redis_timeout, extra = getattr(request, "param", ("50ms", ""))
    run_cli("db", "upgrade", db=pg_url)
    started = []
    for i, host in enumerate(("127.0.0.2", "127.0.0.3")):
        sc = SidecarProcess(
            tmp_path / f"node{i}", pg_url, cluster_config(redis_server.url, redis_timeout, extra), host=host
        )
        sc.start()
        started.append(sc)
    yield started
    for sc in started:
        sc.stop()


def test_suppression_through_one_node_is_enforced_by_the_other_within_2s(nodes):
    a, b = nodes
    ca, cb = a.connect(), b.connect()
    assert cb.ask(rcpt(recipient="dead@example.test")) == "DUNNO"
    run_cli("suppressions", "add", "dead@example.test", "--reason", "hard bounce", db=a.db)
    t0 = time.monotonic()
    for name, c in (("the other node", cb), ("the writer's node", ca)):  # each polls on its own
        while c.ask(rcpt(recipient="dead@example.test")) == "DUNNO":
            assert time.monotonic() - t0 < 2.0, f"not enforced by {name} within 2 s"
            time.sleep(0.05)
    assert ca.ask(rcpt(recipient="dead@example.test")).startswith("550 5.1.1")
    assert cb.ask(rcpt(recipient="dead@example.test")).startswith("550 5.1.1")


def _wait_refused(client, address: str, t0: float, what: str) -> float:
    while client.ask(rcpt(recipient=address)) == "DUNNO":
        assert time.monotonic() - t0 < 2.0, f"{what}: not enforced by the other node within 2 s"
        time.sleep(0.05)
    return time.monotonic() - t0


def test_suppressions_through_one_nodes_api_and_ingester_reach_the_other_within_2s(nodes):
    a, b = nodes
    cb = b.connect()
    body = json.dumps({"address": "api@example.test", "reason": "manual"}).encode()
    req = urllib.request.Request(
        f"http://{a.host}:{a.http_port}/suppressions",
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    t0 = time.monotonic()
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 201
    _wait_refused(cb, "api@example.test", t0, "added through the API")

    # a DSN handed to node a's running service over its ingest socket
    assert (a.tmp / "var" / "ingest.sock").exists()
    t0 = time.monotonic()
    from sidecar.bounce.verp import make_verp_token

    token = make_verp_token(VERP_KEY.encode(), "hard1@example.test")  # corroborates the bounce
    r = subprocess.run(
        [
            str(BIN),
            "ingest",
            "--config",
            str(a.config),
            "--sender",
            "MAILER-DAEMON",
            "--recipient",
            "bounces@bounce.lab.test",
            "--queue-id",
            "CLU5T3R",
            "--extension",
            token,
        ],
        input=DSN.read_bytes(),
        capture_output=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    _wait_refused(cb, "hard1@example.test", t0, "recorded by node a's ingester")
    assert "ingested queue_id=CLU5T3R" in a.log.read_text(), "not handed to node a's service"


@pytest.mark.parametrize("nodes", [("2s", "")], indirect=True)
def test_combined_flood_admits_at_most_limit_plus_burst(nodes):
    admitted = []

    def flood(node):
        c = node.connect()
        ok = sum(c.ask(rcpt(sasl_username="flooder", recipient=f"r{i}@example.test")) == "DUNNO" for i in range(100))
        admitted.append(ok)
        c.close()

    threads = [threading.Thread(target=flood, args=(n,)) for n in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(admitted) == 2
    # rate 50 + burst 10, across both nodes (on failure: did a fallback decide some?)
    assert sum(admitted) == 60, (
        admitted,
        [[ln for ln in n.metrics().splitlines() if "fallback_total{" in ln] for n in nodes],
    )
    assert all(n > 0 for n in admitted)


@pytest.mark.parametrize("nodes", [("2s", SENDER_DOMAIN_RULE)], indirect=True)
def test_concurrent_decisions_go_to_redis_together_and_count_exactly(nodes):
    """20 connections at once: decisions share script calls; two rules, in order, as one node would."""
    replies: list[str] = []
    lock = threading.Lock()

    def flood(node):
        c = node.connect()
        got = [
            c.ask(rcpt(sasl_username="batcher", sender="app@batch.example", recipient=f"r{i}@example.test"))
            for i in range(20)
        ]
        c.close()
        with lock:
            replies.extend(got)

    threads = [threading.Thread(target=flood, args=(n,)) for n in nodes for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(replies) == 400
    # per-sender-domain (30 + 5) admits 35; per-app (50 + 10) counted those and the 25 that the
    # second rule refused after it; everything after that per-app refuses first.
    assert replies.count("DUNNO") == 35
    assert sum("per-sender-domain" in r for r in replies) == 25
    assert sum("per-app" in r for r in replies) == 340
    batches = {}
    for node in nodes:
        for line in node.metrics().splitlines():
            for part in ("sum", "count"):
                if line.startswith(f"sidecar_ratelimit_redis_batch_{part} "):
                    batches[part] = batches.get(part, 0) + float(line.split()[1])
    assert batches["sum"] == 400
    assert batches["count"] < 400, batches  # some script calls carried several decisions


def test_redis_down_falls_back_to_local_limits_at_once(nodes, redis_server):
    a, _ = nodes
    c = a.connect()
    assert c.ask(rcpt(sasl_username="app")) == "DUNNO"
    redis_server.stop()
    try:
        t0 = time.monotonic()
        replies = [c.ask(rcpt(sasl_username="other", recipient=f"x{i}@example.test")) for i in range(70)]
        elapsed = time.monotonic() - t0
        assert replies.count("DUNNO") == 60  # the local fallback applies the same rule
        assert elapsed < 2.0, f"requests waited on Redis: {elapsed:.2f}s for 70"
        m = a.metrics()
        assert "sidecar_ratelimit_redis_up 0.0" in m
        assert 'sidecar_ratelimit_fallback_total{cause="down"}' in m
    finally:
        redis_server.start()


def test_postgresql_restart_policy_answers_from_memory_ingest_exits_75(nodes, postgres_server):
    a, b = nodes
    run_cli("suppressions", "add", "known@example.test", db=a.db)
    time.sleep(1.0)
    ca = a.connect()
    postgres_server.stop()
    try:
        for _ in range(20):
            assert ca.ask(rcpt(recipient="known@example.test")).startswith("550")
            assert ca.ask(rcpt(recipient="fine@example.test")) == "DUNNO"
        r = subprocess.run(
            [
                str(BIN),
                "ingest",
                "--db",
                a.db,
                "--no-handoff",
                "--sender",
                "MAILER-DAEMON",
                "--recipient",
                "bounces@bounce.lab.test",
                "--queue-id",
                "ABC123",
            ],
            input=DSN.read_bytes(),
            capture_output=True,
            timeout=60,
        )
        assert r.returncode == 75, r.stderr
    finally:
        postgres_server.start()
    # caught up afterwards: a suppression added now reaches both nodes
    t0 = time.monotonic()
    while True:
        try:
            run_cli("suppressions", "add", "later@example.test", db=a.db)
            break
        except subprocess.CalledProcessError:
            assert time.monotonic() - t0 < 20
            time.sleep(0.5)
    cb = b.connect()
    t0 = time.monotonic()
    while cb.ask(rcpt(recipient="later@example.test")) == "DUNNO":
        assert time.monotonic() - t0 < 10, "node did not catch up after PostgreSQL came back"
        time.sleep(0.1)


def test_limits_show_and_reset_on_redis(nodes):
    a, _ = nodes
    c = a.connect()
    for i in range(3):
        assert c.ask(rcpt(sasl_username="shown", recipient=f"s{i}@example.test")) == "DUNNO"
    out = run_cli("limits", "show", "per-app:shown", db=a.db, config=a.config).stdout
    assert "used 3, remaining 57" in out
    run_cli("limits", "reset", "per-app:shown", db=a.db, config=a.config)
    out = run_cli("limits", "show", "per-app:shown", db=a.db, config=a.config).stdout
    assert "used 0, remaining 60" in out


@pytest.mark.parametrize("nodes", [("2s", "")], indirect=True)
def test_after_a_redis_restart_the_nodes_reconnect_and_count_in_redis_again(nodes, redis_server):
    a, b = nodes
    ca = a.connect()
    assert ca.ask(rcpt(sasl_username="restart")) == "DUNNO"
    redis_server.stop()
    try:
        assert ca.ask(rcpt(sasl_username="restart")) == "DUNNO"  # the local fallback, at once
    finally:
        redis_server.start()  # same port, empty
    t0 = time.monotonic()
    while "sidecar_ratelimit_redis_up 1.0" not in a.metrics():
        assert time.monotonic() - t0 < 15, "no reconnection within 15 s"
        time.sleep(0.2)
    for i in range(3):  # counted in the new Redis (its script loaded again), so node b sees them
        assert ca.ask(rcpt(sasl_username="resumed", recipient=f"r{i}@example.test")) == "DUNNO"
    out = run_cli("limits", "show", "per-app:resumed", db=b.db, config=b.config).stdout
    assert "used 3, remaining 57" in out
