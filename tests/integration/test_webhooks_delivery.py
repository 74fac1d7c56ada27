"""Webhooks end to end: a real HTTP receiver on loopback, the dispatcher in a real process, a real SQLite file."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import insert

from sidecar.store.db import make_engine, upgrade
from sidecar.store.models import Event
from sidecar.suppression.store import SuppressionStore
from sidecar.webhooks.signing import SignatureError, verify
from tests.harness.api import ApiServer, call
from tests.harness.api import add_event as add_bounce

SECRET = "whsec-test-1"
TOKEN = "tok-webhooks"


class Server(ThreadingHTTPServer):
    request_queue_size = 128  # not 5: twenty concurrent connects must not overflow the listen queue


class Receiver:
    """Records every delivery; answers 503 while ``failing``; verifies each signature."""

    def __init__(self) -> None:
        self.failing = False
        self.lock = threading.Lock()
        self.received: list[dict[str, Any]] = []  # every request, in arrival order
        self.bad_signatures = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                try:
                    verify(SECRET, body, self.headers.get("Sidecar-Signature"), time.time())
                    ok_sig = True
                except SignatureError:
                    ok_sig = False
                payload = json.loads(body)
                with outer.lock:
                    ack = ok_sig and not outer.failing
                    outer.bad_signatures += not ok_sig
                    outer.received.append(
                        {
                            "id": payload["id"],
                            "type": payload["type"],
                            "data": payload["data"],
                            "ack": ack,
                            "attempt": int(self.headers["Sidecar-Delivery-Attempt"]),
                        }
                    )
                self.send_response(200 if ack else (401 if not ok_sig else 503))
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *a: Any) -> None:
                pass

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def acked(self) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.received if r["ack"]]

    def wait_acked(self, ids: set[str], timeout: float = 30) -> None:
        t0 = time.monotonic()
        while not ids <= {r["id"] for r in self.acked()}:
            assert time.monotonic() - t0 < timeout, f"missing {sorted(ids - {r['id'] for r in self.acked()})[:5]}"
            time.sleep(0.05)


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.server.shutdown()


def config(url: str) -> str:
    return f"""
[[api.tokens]]
token = "{TOKEN}"
scope = "write"

[webhooks]
poll_interval = "100ms"
timeout = "1s"
retry_for = "1h"
backoff = "200ms"
backoff_max = "1600ms"

[[webhooks.subscriptions]]
name = "test"
url = "{url}"
secret = "{SECRET}"
"""


@pytest.fixture
def harness(tmp_path, receiver):
    db = f"sqlite:///{tmp_path}/sidecar.db"
    upgrade(make_engine(db))
    s = ApiServer(tmp_path, config(receiver.url), db=db).start()
    time.sleep(0.5)  # the subscription's cursor starts at the end of the feeds
    yield s
    s.stop()


def test_every_kind_delivered_signed(harness, receiver):
    engine = make_engine(harness.db)
    store = SuppressionStore(engine)
    ids = {add_bounce(engine, "a@hooks.test"), add_bounce(engine, "b@hooks.test", "complaint")}
    store.add("a@hooks.test", reason="hard bounce")
    store.remove("a@hooks.test")
    with engine.begin() as conn:
        rid = conn.execute(
            insert(Event)
            .values(
                created_at=time.time(),
                kind="ratelimit",
                address="alice",
                tenant="",
                reason="per-user",
                diagnostic="3 request(s) refused",
            )
            .returning(Event.id)
        ).scalar_one()
    add_bounce(engine, "c@hooks.test", "delay")  # not a webhook event
    ids.add(f"evt_e{rid}")
    receiver.wait_acked(ids)
    time.sleep(0.5)
    types = [r["type"] for r in receiver.acked()]
    assert sorted(types) == sorted(
        ["bounce.recorded", "complaint.recorded", "suppression.added", "suppression.removed", "ratelimit.exceeded"]
    )
    assert receiver.bad_signatures == 0
    assert types.index("suppression.added") < types.index("suppression.removed")
    rl = next(r for r in receiver.acked() if r["type"] == "ratelimit.exceeded")
    assert rl["data"]["key"] == "per-user:alice" and rl["data"]["refused"] == 3
    st, page = call(harness.url, "GET", "/webhooks/deliveries?status=delivered", TOKEN)
    assert st == 200 and len(page["items"]) == 5


def test_failing_receiver_recovers_and_gets_everything_in_order(harness, receiver):
    engine = make_engine(harness.db)
    receiver.failing = True
    order: dict[str, list[str]] = defaultdict(list)
    for i in range(30):
        addr = f"u{i % 3}@order.test"
        order[addr].append(add_bounce(engine, addr))
    t0 = time.monotonic()
    while len(receiver.received) < 6:  # several failed attempts ...
        assert time.monotonic() - t0 < 10
        time.sleep(0.05)
    receiver.failing = False  # ... then it recovers
    receiver.wait_acked({i for ids in order.values() for i in ids})
    time.sleep(0.5)
    acked = receiver.acked()
    assert len(acked) == 30, "an acknowledged event was sent again"
    for addr, ids in order.items():
        assert [r["id"] for r in acked if r["data"]["address"] == addr] == ids
        # never event N+1 for an address before N was acknowledged
        done: set[str] = set()
        for r in receiver.received:
            if r["data"]["address"] != addr:
                continue
            pos = ids.index(r["id"])
            assert all(prev in done for prev in ids[:pos]), "out of order"
            if r["ack"]:
                done.add(r["id"])
    assert any(r["attempt"] > 1 for r in receiver.received)
    repeated = {r["id"] for r in receiver.received if r["attempt"] > 1}
    first_failed = {r["id"] for r in receiver.received if not r["ack"]}
    assert repeated <= first_failed  # repeated only where it had not acknowledged


def test_restart_in_the_middle_loses_nothing(harness, receiver):
    engine = make_engine(harness.db)
    first = [add_bounce(engine, f"r{i}@restart.test") for i in range(20)]
    receiver.wait_acked(set(first[:5]))
    harness.stop(signal.SIGKILL)
    second = [add_bounce(engine, f"s{i}@restart.test") for i in range(20)]
    harness.start()
    receiver.wait_acked(set(first + second), timeout=40)
    assert receiver.bad_signatures == 0


def test_dead_letter_then_redeliver(tmp_path, receiver):
    db = f"sqlite:///{tmp_path}/sidecar.db"
    upgrade(make_engine(db))
    s = ApiServer(tmp_path, config(receiver.url).replace('retry_for = "1h"', 'retry_for = "1s"'), db=db).start()
    try:
        time.sleep(0.5)
        receiver.failing = True
        eid = add_bounce(make_engine(db), "dead@hooks.test")
        t0 = time.monotonic()
        while True:
            st, page = call(s.url, "GET", "/webhooks/deliveries?status=dead", TOKEN)
            if page["items"]:
                break
            assert time.monotonic() - t0 < 15, "never dead-lettered"
            time.sleep(0.1)
        dead = page["items"][0]
        assert dead["event_id"] == eid and dead["attempts"] >= 2 and dead["last_error"] == "HTTP 503"
        metrics = call(s.url, "GET", "/metrics")[1].decode()
        assert 'sidecar_webhook_deliveries_total{outcome="dead",subscription="test"} 1.0' in metrics
        assert 'sidecar_webhook_deliveries_total{outcome="failed",subscription="test"}' in metrics
        receiver.failing = False
        st, out = call(s.url, "POST", "/webhooks/redeliver", TOKEN, {"from_id": dead["id"], "status": "dead"})
        assert out == {"queued": 1}
        receiver.wait_acked({eid})
        metrics = call(s.url, "GET", "/metrics")[1].decode()
        assert 'sidecar_webhook_deliveries_total{outcome="delivered",subscription="test"} 1.0' in metrics
    finally:
        s.stop()
