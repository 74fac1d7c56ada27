"""Hostile input at the management API, over a real loopback socket and a real SQLite file:
every input error is a JSON 400 naming the field, and nothing is stored on error."""

from __future__ import annotations

import base64
import csv
import io
import json

import pytest

from sidecar.store.db import make_engine
from sidecar.suppression.store import SuppressionStore
from tests.harness.api import ApiServer, call

TOKEN = "hostile-token"
CONFIG = f"""
[api]
max_body = "2MB"
[[api.tokens]]
token = "{TOKEN}"
scope = "write"
"""

CONTROLS = ["\r", "\n", "\x00", "\x1b", "\t", "\x7f", "\x85", "\u2028", "\u2029"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = ApiServer(tmp_path_factory.mktemp("hostile"), CONFIG).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def store(server):
    return SuppressionStore(make_engine(server.db))


def post(server, body):
    return call(server.url, "POST", "/suppressions", TOKEN, body)


def listing_works(server) -> int:
    """Every read that a bad row used to break still answers."""
    st, pg = call(server.url, "GET", "/suppressions?active=all&limit=1000", TOKEN)
    assert st == 200, pg
    st, raw = call(server.url, "GET", "/suppressions/export", TOKEN)
    assert st == 200
    for item in pg["items"]:
        assert call(server.url, "GET", "/suppressions/" + item["address"].replace("#", "%23"), TOKEN)[0] == 200
    return len(pg["items"])


@pytest.mark.parametrize("char", CONTROLS, ids=[f"U+{ord(c):04X}" for c in CONTROLS])
@pytest.mark.parametrize("field", ["address", "tenant", "reason", "note", "category"])
def test_control_characters_refused_in_every_text_field(server, store, field, char):
    body = {"address": f"cc-{field}@example.com", "reason": "manual", field: f"x{char}y"}
    if field == "address":
        body["address"] = f"cc{char}x@example.com"
    st, out = post(server, body)
    assert st == 400, out
    assert out["error"]["field"] == field and f"U+{ord(char):04X}" in out["error"]["message"]
    assert store.get(f"cc-{field}@example.com") == []


def test_control_characters_refused_in_import_with_line_and_field(server, store):
    text = 'address,reason,note\nok1@ctl.test,r,fine\nok2@ctl.test,r,"two\nlines"\n'
    st, out = call(server.url, "POST", "/suppressions/import", TOKEN, data=text.encode(), ctype="text/csv")
    assert st == 400 and out["error"]["field"] == "body"
    assert "line 3: note: control character U+000A" in out["error"]["message"]
    jl = b'{"address": "ok3@ctl.test"}\n{"address": "ok4@ctl.test", "tenant": "a\\u2028b"}\n'
    st, out = call(server.url, "POST", "/suppressions/import", TOKEN, data=jl, ctype="application/x-ndjson")
    assert st == 400 and "line 2: tenant: control character U+2028" in out["error"]["message"]
    assert all(store.get(f"ok{i}@ctl.test") == [] for i in range(1, 5))  # nothing committed


@pytest.mark.parametrize(
    "raw",
    [
        b'{"address": "t@time.test", "expires_at": 1e400}',
        b'{"address": "t@time.test", "expires_at": -1e300}',
        b'{"address": "t@time.test", "expires_at": NaN}',
        b'{"address": "t@time.test", "expires_at": Infinity}',
        b'{"address": "t@time.test", "expires_at": 253402300800}',
        b'{"address": "t@time.test", "expires_at": "99999999999999"}',
        b'{"address": "t@time.test", "expires_at": "1e400"}',
        b'{"address": "t@time.test", "expires_at": "NaN"}',
        b'{"address": "t@time.test", "expires_at": "0001-01-01"}',
        b'{"address": "t@time.test", "expires_at": "9999-12-31T23:59:59-05:00"}',
        b'{"address": "t@time.test", "expires_at": "99999999d"}',
    ],
)
def test_out_of_range_times_refused_and_nothing_stored(server, store, raw):
    st, out = call(server.url, "POST", "/suppressions", TOKEN, data=raw)
    assert st == 400 and out["error"]["field"] == "expires_at", out
    assert store.get("t@time.test") == []
    listing_works(server)


def test_times_in_range_still_accepted(server):
    for value, expect in (
        ("never", None),
        ("2030-01-01", "2030-01-01T00:00:00Z"),
        (1900000000, "2030-03-17T17:46:40Z"),
        ("1900000000", "2030-03-17T17:46:40Z"),
        ("9999-12-31T23:59:59Z", "9999-12-31T23:59:59Z"),
    ):
        st, row = post(server, {"address": "ok@time.test", "expires_at": value})
        assert st == 201 and row["expires_at"] == expect, (value, row)


def test_out_of_range_import_times_refused(server, store):
    for text in (
        "address,created_at\nc1@time.test,100000000000000000000\n",
        "address,created_at\nc1@time.test,1e20\n",
        "address,expires_at\nc1@time.test,10000-01-01\n",
    ):
        st, out = call(server.url, "POST", "/suppressions/import", TOKEN, data=text.encode(), ctype="text/csv")
        assert st == 400 and "line 2: " in out["error"]["message"] and "_at:" in out["error"]["message"], out
    st, out = call(
        server.url,
        "POST",
        "/suppressions/import?expires_at=1e400",
        TOKEN,
        data=b"address\nc2@time.test\n",
        ctype="text/csv",
    )
    assert st == 400 and out["error"]["field"] == "expires_at"
    assert store.get("c1@time.test") == store.get("c2@time.test") == []
    listing_works(server)


@pytest.mark.parametrize(
    "path,field",
    [
        ("/suppressions?limit=%D9%A1%D9%A2", "limit"),  # Arabic-Indic digits
        ("/suppressions?limit=%C2%B2", "limit"),  # superscript two: isdigit() but not int()
        ("/suppressions?limit=" + "9" * 5000, "limit"),  # past int()'s digit limit
        ("/suppressions?cursor=%D9%A1%D9%A2", "cursor"),
        ("/suppressions?cursor=" + "9" * 30, "cursor"),
        ("/suppressions?cursor=a." + base64.urlsafe_b64encode(b'["\\ud800", ""]').decode(), "cursor"),  # lone surrogate
        ("/events?cursor=%C2%B2", "cursor"),
        ("/events?limit=" + "1" * 40, "limit"),
        ("/messages/%C2%B2", "id"),
        ("/messages/" + "9" * 40, "id"),
        ("/webhooks/deliveries?cursor=%D9%A1", "cursor"),
        ("/suppressions?tenant=a%00b", "tenant"),
        ("/suppressions?reason=a%0Ab", "reason"),
        ("/suppressions?since=1e400", "since"),
        ("/suppressions?until=-5", "until"),
        ("/stats?since=0001-01-01", "since"),
        ("/events?since=%D9%A1%D9%A2", "since"),
        ("/limits/a%0Ab", "key"),
    ],
)
def test_hostile_query_parameters_are_400s(server, path, field):
    st, out = call(server.url, "GET", path, TOKEN)
    assert (st, out["error"]["field"]) == (400, field), (path, out)


def test_hostile_path_address_and_prefix(server):
    st, out = call(server.url, "GET", "/suppressions/a%0D%0Ab@example.com", TOKEN)
    assert st == 400 and out["error"]["field"] == "address"
    st, out = call(server.url, "DELETE", "/suppressions/a%00b@example.com", TOKEN)
    assert st == 400 and out["error"]["field"] == "address"
    for prefix in ("%F4%8F%BF%BF", "a%F4%8F%BF%BF", "%F4%8F%BF%BF%F4%8F%BF%BF", "%ED%9F%BF"):  # U+10FFFF, U+D7FF
        st, out = call(server.url, "GET", f"/suppressions?prefix={prefix}", TOKEN)
        assert st == 200 and out["items"] == [], (prefix, out)


@pytest.mark.parametrize(
    "data,field",
    [
        (b"[" * 100_000 + b"]" * 100_000, "body"),
        (b'{"address": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "body"),
        (b'{"address": "lone\\ud800@example.com"}', "address"),
        (b'{"address": "a@example.com", "note": "x\\udc00"}', "note"),
        (b'{"address": "a@example.com", "tenant": "\\ud83d"}', "tenant"),
        (b'{"address": "a@example.com", "reason": 5}', "reason"),
        (b"\xff{}", "body"),
    ],
)
def test_hostile_json_bodies_are_400s(server, data, field):
    st, out = call(server.url, "POST", "/suppressions", TOKEN, data=data)
    assert (st, out["error"]["field"]) == (400, field), out


def test_hostile_redeliver_ids(server):
    for body, field in (({"from_id": 10**30}, "from_id"), ({"from_id": 0, "to_id": -1}, "to_id")):
        st, out = call(server.url, "POST", "/webhooks/redeliver", TOKEN, body)
        assert (st, out["error"]["field"]) == (400, field), out


def test_hostile_jsonl_import(server):
    for line in (b"[" * 100_000 + b"]" * 100_000, b'{"address": {"nested": 1}}', b'{"address": "x\\ud800@e.test"}'):
        st, out = call(
            server.url, "POST", "/suppressions/import", TOKEN, data=line + b"\n", ctype="application/x-ndjson"
        )
        assert st == 400 and out["error"]["field"] == "body" and "line 1" in out["error"]["message"], out


def test_csv_export_neutralises_formulas_and_round_trips(server, store):
    hostile = [
        "=cmd@formula.test",
        "+sum@formula.test",
        "-x@formula.test",
        "'=quoted@formula.test",
        "''+two@formula.test",
        "'plain@formula.test",
    ]
    for a in hostile:
        assert post(server, {"address": a, "reason": "=HYPERLINK(1)", "note": "@SUM(A1)", "tenant": "-t"})[0] == 201
    st, raw = call(server.url, "GET", "/suppressions/export?tenant=-t", TOKEN)
    rows = list(csv.DictReader(io.StringIO(raw.decode())))
    got = {r["address"] for r in rows}
    assert got == {
        "'=cmd@formula.test",
        "'+sum@formula.test",
        "'-x@formula.test",
        "''=quoted@formula.test",
        "'''+two@formula.test",
        "'plain@formula.test",
    }
    for r in rows:  # no cell a spreadsheet would evaluate
        assert all(v[:1] not in "=+-@\t\r" or v == "" for v in r.values()), r
        assert (r["reason"], r["note"], r["tenant"]) == ("'=HYPERLINK(1)", "'@SUM(A1)", "'-t")
    # import what we exported (into another tenant): the very same values come back
    st, out = call(
        server.url,
        "POST",
        "/suppressions/import",
        TOKEN,
        data=raw.decode().replace(",'-t,", ",round,").encode(),
        ctype="text/csv",
    )
    assert (st, out) == (200, {"imported": len(hostile)})
    for a in hostile:
        again = next(r for r in store.get(a) if r.tenant == "round")
        assert (again.address, again.reason, again.note) == (a, "=HYPERLINK(1)", "@SUM(A1)")
    # JSON lines are not spreadsheet input: as stored
    st, raw = call(server.url, "GET", "/suppressions/export?tenant=-t&format=jsonl", TOKEN)
    assert {json.loads(x)["address"] for x in raw.splitlines()} == set(hostile)


def test_failed_import_commits_nothing(server, store):
    text = "address,reason\n" + "".join(f"all{i}@none.test,bulk\n" for i in range(12000)) + "broken,bulk\n"
    st, out = call(server.url, "POST", "/suppressions/import", TOKEN, data=text.encode(), ctype="text/csv")
    assert st == 400 and "line 12002: address:" in out["error"]["message"]
    assert store.get("all0@none.test") == [] and store.get("all11999@none.test") == []
    st, pg = call(server.url, "GET", "/suppressions?prefix=all", TOKEN)
    assert pg["items"] == []
