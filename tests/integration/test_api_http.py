"""The management API over a real loopback socket and a real SQLite file."""

from __future__ import annotations

import csv
import hashlib
import io
import time
import zlib

import pytest
from sqlalchemy import insert

from sidecar.store.db import make_engine
from sidecar.store.models import Event, RawMessage
from sidecar.suppression.store import SuppressionStore
from tests.harness.api import ApiServer, call

READ, WRITE = "r-token-123", "w-token-456"
CONFIG = f"""
[api]
max_body = "64k"
[[api.tokens]]
token = "{READ}"
scope = "read"
name = "reader"
[[api.tokens]]
token_sha256 = "{hashlib.sha256(WRITE.encode()).hexdigest()}"
scope = "write"

[[ratelimit.rules]]
name = "per-user"
key = ["sasl_username"]
limits = [{{ rate = 10, per = "1h" }}]
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = ApiServer(tmp_path_factory.mktemp("api"), CONFIG).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def engine(server):
    return make_engine(server.db)


def test_tokens_and_scopes(server):
    assert call(server.url, "GET", "/healthz")[0] == 200
    st, body = call(server.url, "GET", "/suppressions")
    assert st == 401 and body["error"]["field"] == "authorization"
    assert call(server.url, "GET", "/suppressions", token="wrong")[0] == 401
    assert call(server.url, "GET", "/suppressions", token=READ)[0] == 200
    st, body = call(server.url, "POST", "/suppressions", READ, {"address": "a@example.com"})
    assert st == 403 and "scope read" in body["error"]["message"]
    assert call(server.url, "GET", "/openapi.json")[0] == 401
    st, spec = call(server.url, "GET", "/openapi.json", READ)
    assert st == 200 and "/suppressions/{address}" in spec["paths"]
    assert call(server.url, "PUT", "/suppressions", WRITE)[0] == 405
    assert call(server.url, "GET", "/nothing", READ)[0] == 404
    metrics = call(server.url, "GET", "/metrics")[1].decode()
    assert 'sidecar_api_requests_total{route="GET /suppressions",status="401"} 2.0' in metrics
    assert 'sidecar_api_requests_total{route="POST /suppressions",status="403"} 1.0' in metrics
    assert 'sidecar_api_requests_total{route="unmatched",status="405"} 1.0' in metrics


def test_add_get_why_remove(server, engine):
    st, row = call(
        server.url,
        "POST",
        "/suppressions",
        WRITE,
        {"address": "Bob@Example.COM", "reason": "manual", "tenant": "acme", "expires_at": "30d"},
    )
    assert st == 201 and row["address"] == "bob@example.com" and row["tenant"] == "acme" and row["expires_at"]
    # a bounce with its raw message, linked as the cause of a global suppression
    with engine.begin() as conn:
        mid = conn.execute(
            insert(RawMessage)
            .values(
                sha256="x" * 64,
                received_at=time.time(),
                size=11,
                content=zlib.compress(b"Subject: x\n"),
                state="parsed",
                kind="dsn",
                queue_id="ABC123",
            )
            .returning(RawMessage.id)
        ).scalar_one()
        eid = conn.execute(
            insert(Event)
            .values(
                created_at=time.time(),
                kind="bounce",
                address="bob@example.com",
                tenant="",
                category="invalid-recipient",
                hard=True,
                status="5.1.1",
                decision="suppress-hard",
                message_id=mid,
            )
            .returning(Event.id)
        ).scalar_one()
    SuppressionStore(engine).add("bob@example.com", reason="hard bounce", source="bounce", cause_event_ids=[eid])
    st, why = call(server.url, "GET", "/suppressions/bob%40example.com", READ)
    assert st == 200
    glob = next(s for s in why["suppressions"] if s["tenant"] == "")
    assert glob["reason"] == "hard bounce" and glob["causes"][0]["status"] == "5.1.1"
    assert glob["causes"][0]["message"]["queue_id"] == "ABC123"
    st, raw = call(server.url, "GET", glob["causes"][0]["message"]["raw"], READ)
    assert st == 200 and raw == b"Subject: x\n"
    assert [h["action"] for h in why["history"]] == ["added", "added"]
    st, out = call(server.url, "DELETE", "/suppressions/bob@example.com?tenant=acme", WRITE)
    assert st == 200 and out["removed"]
    assert call(server.url, "DELETE", "/suppressions/bob@example.com?tenant=acme", WRITE)[0] == 404
    assert call(server.url, "GET", "/suppressions/nobody@example.com", READ)[0] == 404


@pytest.mark.parametrize(
    "body,field",
    [
        ({"reason": "x"}, "address"),
        ({"address": "no-at-sign"}, "address"),
        ({"address": "a@example.com", "reason": "r" * 65}, "reason"),
        ({"address": "a@example.com", "expires_at": "next tuesday"}, "expires_at"),
        ({"address": "a@example.com", "colour": "red"}, "colour"),
    ],
)
def test_bad_input_names_the_field(server, body, field):
    st, out = call(server.url, "POST", "/suppressions", WRITE, body)
    assert st == 400 and out["error"]["field"] == field


def test_bad_query_parameters(server):
    for path, field in (
        ("/suppressions?limit=0", "limit"),
        ("/suppressions?limit=abc", "limit"),
        ("/suppressions?since=yesterday-ish", "since"),
        ("/events?kind=explosion", "kind"),
        ("/suppressions?cursor=-1", "cursor"),
        ("/limits/nokey", "key"),
        ("/webhooks/deliveries?status=lost", "status"),
    ):
        st, out = call(server.url, "GET", path, READ)
        assert (st, out["error"]["field"]) == (400, field), path
    st, out = call(server.url, "POST", "/suppressions", WRITE, data=b"{not json")
    assert st == 400 and out["error"]["field"] == "body"


def test_body_limit(server):
    st, out = call(
        server.url,
        "POST",
        "/suppressions/import",
        WRITE,
        data=b"address\n" + b"x@example.com\n" * 10000,
        ctype="text/csv",
    )
    assert st == 413 and out["error"]["field"] == "body"


def test_list_filters_and_cursor_pagination(server, engine):
    store = SuppressionStore(engine)
    for i in range(25):
        store.add(
            f"page{i:02d}@list.test",
            reason="hard bounce" if i % 2 else "complaint",
            category="mailbox-full" if i % 5 == 0 else None,
            tenant="t1" if i < 20 else "t2",
        )
    seen, cur = [], ""
    while True:
        st, pg = call(server.url, "GET", f"/suppressions?prefix=page&tenant=t1&limit=7&cursor={cur}", READ)
        assert st == 200
        seen += [r["address"] for r in pg["items"]]
        if not pg["next_cursor"]:
            break
        cur = pg["next_cursor"]
    assert seen == [f"page{i:02d}@list.test" for i in range(20)]
    st, pg = call(server.url, "GET", "/suppressions?prefix=page&reason=complaint&category=mailbox-full", READ)
    assert [r["address"] for r in pg["items"]] == ["page00@list.test", "page10@list.test", "page20@list.test"]
    st, pg = call(server.url, "GET", "/suppressions?prefix=page1&since=1h&until=2099-01-01", READ)
    assert len(pg["items"]) == 10
    st, pg = call(server.url, "GET", "/suppressions?prefix=page&since=2099-01-01", READ)
    assert pg["items"] == []


def test_import_and_export_csv_and_jsonl(server):
    text = "address,tenant,reason\n" + "".join(f"imp{i}@bulk.test,,bulk\n" for i in range(500))
    st, out = call(server.url, "POST", "/suppressions/import", WRITE, data=text.encode(), ctype="text/csv")
    assert (st, out) == (200, {"imported": 500})
    jl = b'{"address": "j1@bulk.test", "reason": "jl"}\n{"address": "j2@bulk.test"}\n'
    st, out = call(server.url, "POST", "/suppressions/import?reason=dflt", WRITE, data=jl, ctype="application/x-ndjson")
    assert (st, out) == (200, {"imported": 2})
    st, out = call(server.url, "POST", "/suppressions/import", WRITE, data=b"address\nbad-address\n", ctype="text/csv")
    assert st == 400 and "line 2" in out["error"]["message"]
    st, raw = call(server.url, "GET", "/suppressions/export?prefix=imp", READ)
    rows = list(csv.DictReader(io.StringIO(raw.decode())))
    assert len(rows) == 500 and rows[0]["reason"] == "bulk"
    st, raw = call(server.url, "GET", "/suppressions/export?format=jsonl&prefix=j", READ)
    assert [line.count(b'"reason"') for line in raw.splitlines()] == [1, 1]
    assert b'"dflt"' in raw


def test_events_stats_limits_and_webhooks(server, engine):
    with engine.begin() as conn:
        for kind, addr in (("bounce", "ev1@ev.test"), ("complaint", "ev2@ev.test"), ("ratelimit", "alice")):
            conn.execute(
                insert(Event).values(
                    created_at=time.time(),
                    kind=kind,
                    address=addr,
                    tenant="acme",
                    category=kind,
                    reason="per-user" if kind == "ratelimit" else None,
                )
            )
    st, pg = call(server.url, "GET", "/events?tenant=acme&kind=complaint", READ)
    assert [e["address"] for e in pg["items"]] == ["ev2@ev.test"]
    st, pg = call(server.url, "GET", "/events?address=EV1@ev.test", READ)
    assert [e["kind"] for e in pg["items"]] == ["bounce"]
    st, stats = call(server.url, "GET", "/stats?since=1h", READ)
    assert {"kind": "complaint", "category": "complaint", "tenant": "acme", "count": 1} in stats["events"]
    assert stats["active_suppressions"] > 0
    st, lim = call(server.url, "GET", "/limits/per-user:alice", READ)
    assert st == 200 and lim["windows"][0]["remaining"] == 10
    assert call(server.url, "DELETE", "/limits/per-user:alice", READ)[0] == 403
    st, out = call(server.url, "DELETE", "/limits/per-user:alice", WRITE)
    assert st == 200 and out["reset"]
    st, hooks = call(server.url, "GET", "/webhooks", READ)
    assert hooks["subscriptions"] == []
    st, out = call(server.url, "POST", "/webhooks/redeliver", WRITE, {"from_id": 0})
    assert (st, out) == (200, {"queued": 0})
    st, out = call(server.url, "POST", "/webhooks/redeliver", WRITE, {"from_id": "x"})
    assert st == 400 and out["error"]["field"] == "from_id"
