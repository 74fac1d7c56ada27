"""Hostile input at the CLI, the store and the ingester; repair of times stored before the checks."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import time
from pathlib import Path

import pytest
from sqlalchemy import insert, select
from sqlalchemy.exc import OperationalError

from sidecar.store.db import current_revision, head_revision, make_engine, upgrade
from sidecar.store.models import Change, Event, Suppression
from sidecar.suppression.address import AddressError, split
from sidecar.suppression.store import SuppressionStore
from sidecar.units import InvalidValue
from tests.harness.api import ApiServer
from tests.harness.ingest import HARD, ingest
from tests.harness.sidecar import run_cli

TOKEN = "inputs-cli-token"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = ApiServer(tmp_path_factory.mktemp("inputs-cli"), f'[[api.tokens]]\ntoken = "{TOKEN}"\nscope = "write"\n')
    s.start()
    yield s
    s.stop()


@pytest.fixture(params=["db", "api"])
def cli(request, server):
    def run(*args: str):
        extra = ("--api", server.url, "--token", TOKEN) if request.param == "api" else ()
        return run_cli(*args, *extra, db=server.db, config=server.config, check=False)

    run.mode = request.param
    return run


def one_line_error(res, *needles: str) -> None:
    assert res.returncode == 2, (res.stdout, res.stderr)
    err = res.stderr.strip()
    assert "\n" not in err and "Traceback" not in err and err.startswith("sidecar: "), err
    for n in needles:
        assert n in err, err


def active(server, prefix: str) -> list[str]:
    with make_engine(server.db).connect() as conn:
        return [a for (a,) in conn.execute(select(Suppression.address).where(Suppression.address.startswith(prefix)))]


def test_cli_add_refuses_control_characters_and_bad_times(cli, server):
    m = cli.mode
    one_line_error(cli("suppressions", "add", f"{m}-a\rb@cli.test"), "U+000D")
    one_line_error(cli("suppressions", "add", f"{m}-ok@cli.test", "--note", "line\nbreak"), "note", "U+000A")
    one_line_error(cli("suppressions", "add", f"{m}-ok@cli.test", "--reason", "a\x01b"), "reason", "U+0001")
    one_line_error(cli("suppressions", "add", f"{m}-ok@cli.test", "--tenant", "t\u2028"), "tenant", "U+2028")
    for bad in ("99999999999999", "1e400", "NaN", "0001-01-01", "99999999d"):
        one_line_error(cli("suppressions", "add", f"{m}-ok@cli.test", "--expires", bad), "expires")
    # several addresses: a bad one anywhere means none is added
    one_line_error(cli("suppressions", "add", f"{m}-first@cli.test", f"{m}-bad\x1b@cli.test"), "U+001B")
    assert active(server, f"{m}-") == []
    one_line_error(cli("suppressions", "list", "--since", "1e400"), "since")


def test_cli_import_is_all_or_nothing_and_names_line_and_field(cli, server, tmp_path):
    m = cli.mode
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "address,reason\n"
        + "".join(f"{m}-bulk{i}@imp.test,bulk\n" for i in range(6000))
        + f'{m}-last@imp.test,"two\nlines"\n'
    )
    one_line_error(cli("suppressions", "import", str(bad), "--no-progress"), "line 6002", "reason", "U+000A")
    assert active(server, f"{m}-") == []
    bad.write_text("address,created_at\n" + f"{m}-x@imp.test,2020-01-01\n{m}-y@imp.test,100000000000000000000\n")
    one_line_error(cli("suppressions", "import", str(bad), "--no-progress"), "line 3", "created_at")
    one_line_error(cli("suppressions", "import", str(bad), "--no-progress", "--expires", "NaN"), "expires")
    assert active(server, f"{m}-") == []


def test_cli_export_import_round_trip_of_formula_cells(cli, server, tmp_path):
    m = cli.mode
    addrs = [f"={m}cmd@rt.test", f"+{m}@rt.test", f"-{m}@rt.test", f"@{m}x@rt.test", f"'={m}q@rt.test"]
    store = SuppressionStore(make_engine(server.db))
    for a in addrs:  # as a forged bounce could leave them
        store.add(a, reason="-5+3", tenant=f"{m}-src")
    out = tmp_path / "out.csv"
    assert cli("suppressions", "export", str(out), "--tenant", f"{m}-src").returncode == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert sorted(r["address"] for r in rows) == sorted("'" + a for a in addrs)
    assert {r["reason"] for r in rows} == {"'-5+3"}
    out.write_text(out.read_text().replace(f",{m}-src,", f",{m}-copy,"))
    res = cli("suppressions", "import", str(out), "--no-progress", "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["imported"] == len(addrs), res.stderr
    with make_engine(server.db).connect() as conn:
        copied = conn.execute(
            select(Suppression.address, Suppression.reason).where(Suppression.tenant == f"{m}-copy")
        ).all()
    assert sorted(copied) == sorted((a.lower(), "-5+3") for a in addrs)


def test_store_layer_refuses_control_characters_and_bad_times(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path}/s.db")
    upgrade(engine)
    store = SuppressionStore(engine)
    for kw in (
        {"reason": "a\nb"},
        {"reason": "r", "tenant": "\x00"},
        {"reason": "r", "note": "\u2029"},
        {"reason": "r", "category": "\x7f"},
        {"reason": "r", "source": "\x85"},
        {"reason": "r", "expires_at": float("inf")},
        {"reason": "r", "expires_at": float("nan")},
        {"reason": "r", "expires_at": -1e300},
        {"reason": "r" * 65},
    ):
        with pytest.raises(InvalidValue):
            store.add("ok@store.test", **kw)
    with pytest.raises(AddressError, match=r"U\+000A"):
        store.add("a\n@store.test", reason="r")
    with pytest.raises(ValueError, match=r"line 3: address: .*U\+0000"):
        store.import_rows([{"address": "good@store.test"}, {"address": "b\x00d@store.test"}])
    with pytest.raises(ValueError, match="line 2: expires_at"):
        store.import_rows([{"address": "good@store.test", "expires_at": "inf"}])
    assert store.count() == 0
    # what the ingester's canonical() goes through
    for a in ("x\r@example.com", "x@example.com\n", "\x00x@example.com", "x\u2028y@example.com", '"a\tb"@example.com'):
        with pytest.raises(AddressError, match="control character"):
            split(a)
    assert split('"a b"@Example.com') == ('"a b"', "example.com")


def test_ingester_ignores_a_recipient_with_a_control_character(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    raw = HARD.read_bytes().replace(
        b"Final-Recipient: rfc822; hard1@example.test", b"Final-Recipient: rfc822; hard1\x1b@example.test"
    )
    raw = raw.replace(b"Original-Recipient: rfc822;hard1@example.test\n", b"")
    r = ingest(db, raw)
    assert r.returncode == 0, r.stderr
    with sqlite3.connect(db) as c:
        addrs = [a for (a,) in c.execute("select address from suppressions union all select address from events")]
    assert all("\x1b" not in (a or "") for a in addrs), addrs


def test_migration_0003_repairs_stored_times(db_url, tmp_path):
    engine = make_engine(db_url)
    upgrade(engine, "0002")
    now = time.time()
    poison = [
        ("inf", float("inf"), now, now),
        ("minus", -1e300, now, now),
        ("far", 1e20, 1e20, now),
        ("ok", now + 60, now, now),
        ("never", None, now, float("-inf")),
    ]
    if engine.dialect.name == "postgresql":  # SQLite stores NaN as NULL already
        poison.append(("nan", float("nan"), float("nan"), now))
    with engine.begin() as conn:
        for name, expires, created, updated in poison:
            conn.execute(
                insert(Suppression).values(
                    address=f"{name}@poison.test",
                    tenant="",
                    reason="r",
                    source="api",
                    active=True,
                    created_at=created,
                    updated_at=updated,
                    expires_at=expires,
                )
            )
            conn.execute(
                insert(Change).values(
                    kind="suppression",
                    address=f"{name}@poison.test",
                    tenant="",
                    active=True,
                    created_at=created,
                    expires_at=expires,
                    changed_at=updated,
                )
            )
        conn.execute(insert(Event).values(created_at=float("inf"), kind="bounce", address="inf@poison.test", tenant=""))
    engine.dispose()
    res = run_cli("db", "upgrade", db=db_url, check=False)
    assert res.returncode == 0 and "repaired" in res.stderr, res.stderr
    assert current_revision(engine) == head_revision()
    with engine.connect() as conn:
        got = {
            a.split("@")[0]: (c, u, e)
            for a, c, u, e in conn.execute(
                select(Suppression.address, Suppression.created_at, Suppression.updated_at, Suppression.expires_at)
            )
        }
        ((ev,),) = conn.execute(select(Event.created_at)).all()
    assert got["inf"][2] is None and got["minus"][2] == 0.0 and got["ok"][2] == pytest.approx(now + 60)
    assert got["far"] == (253402300799.0, pytest.approx(now), None)
    assert got["never"][1:] == (0.0, None) and ev == 253402300799.0
    if "nan" in got:
        assert got["nan"][:1] + got["nan"][2:] == (253402300799.0, None)
    for args in (
        ("suppressions", "list", "--all", "--json"),
        ("suppressions", "why", "inf@poison.test"),
        ("suppressions", "export", "-"),
        ("events", "list", "--json"),
    ):
        res = run_cli(*args, db=db_url, check=False)
        assert res.returncode == 0, (args, res.stderr)
    engine.dispose()


def test_a_database_failure_mid_import_says_what_was_committed(tmp_path, monkeypatch):
    from sidecar.suppression import bulk as bulk_mod
    from sidecar.suppression import bulk_sqlite

    engine = make_engine(f"sqlite:///{tmp_path}/s.db")
    upgrade(engine)
    real, calls = bulk_sqlite.write_part, []

    def flaky(conn, first, end, now):
        calls.append(end - first)
        if len(calls) == 3:
            raise OperationalError("INSERT", {}, Exception("disk I/O error"))
        real(conn, first, end, now)

    monkeypatch.setattr(bulk_sqlite, "write_part", flaky)
    s = SuppressionStore(engine)
    with pytest.raises(bulk_mod.ImportIncomplete, match=r"after committing 10 of 25 rows \(lines 2\.\.11\)"):
        s.import_rows(({"address": f"u{i}@fail.test"} for i in range(25)), batch=5)
    assert s.count() == 10


def test_cli_message_id_out_of_range(server):
    res = run_cli("events", "message", "9" * 30, db=server.db, config=server.config, check=False)
    one_line_error(res, "MESSAGE_ID")
