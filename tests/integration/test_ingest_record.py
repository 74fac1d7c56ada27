"""sidecar ingest end to end: real processes, real SQLite files, exit codes and the suppression policy."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from tests.harness.ingest import ARF, AUTO, BLOCK, DELAY, HARD, KEY, POSTFIX, SOFT, ingest, q, recorded, variant


@pytest.fixture
def cfgfile(tmp_path: Path):
    def make(**ingest: object) -> Path:
        lines = ["[ingest]", f'socket = "{tmp_path}/no-service.sock"']
        for k, v in ingest.items():
            lines.append(f"{k} = {v!r}".replace("'", '"'))
        p = tmp_path / f"sidecar-{len(list(tmp_path.glob('sidecar-*.toml')))}.toml"
        p.write_text("\n".join(lines) + "\n")
        return p

    return make


def test_hard_bounce_stored_and_suppressed_with_causes(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    r = ingest(db, HARD.read_bytes(), python_prelude=recorded(("acme", "hard1@example.test")))
    assert r.returncode == 0, r.stderr
    assert r.stdout == b""  # pipe(8) would read stdout as a status
    ((mid, state, kind, qid),) = q(db, "select id, state, kind, queue_id from raw_messages")
    assert (state, kind, qid) == ("parsed", "bounce", "ABC123")
    ((eid, addr, decision, emid),) = q(db, "select id, address, decision, message_id from events")
    assert (addr, decision, emid) == ("hard1@example.test", "suppress-hard", mid)
    ((sid, tenant, reason, category, expires),) = q(
        db, "select id, tenant, reason, category, expires_at from suppressions"
    )
    assert (tenant, reason, category, expires) == ("", "hard bounce", "invalid-recipient", None)
    assert q(db, "select suppression_id, event_id from suppression_causes") == [(sid, eid)]
    assert q(db, "select kind, address, active from changes") == [("suppression", "hard1@example.test", 1)]


def test_same_message_twice_is_recorded_once(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    for _ in range(2):
        assert ingest(db, HARD.read_bytes(), python_prelude=recorded(("acme", "hard1@example.test"))).returncode == 0
    assert q(db, "select count(*) from raw_messages") == [(1,)]
    assert q(db, "select count(*) from events") == [(1,)]
    assert q(db, "select count(*) from changes") == [(1,)]


def test_three_soft_bounces_suppress_for_seven_days(tmp_path: Path, cfgfile) -> None:
    from sidecar.bounce.verp import make_verp_token

    db = tmp_path / "s.db"
    verp = ("--extension", make_verp_token(KEY.encode(), "full1@example.test"))
    cfg = cfgfile(verp_key=KEY)
    for n in range(2):
        assert ingest(db, variant(SOFT, n), *verp, config=cfg).returncode == 0
    assert q(db, "select count(*) from suppressions") == [(0,)]
    assert [d for (d,) in q(db, "select decision from events order by id")] == ["soft", "soft"]
    t0 = time.time()
    assert ingest(db, variant(SOFT, 2), *verp, config=cfg).returncode == 0
    ((sid, reason, category, expires),) = q(db, "select id, reason, category, expires_at from suppressions")
    assert (reason, category) == ("soft bounces", "mailbox-full")
    assert abs(expires - (t0 + 7 * 86400)) < 60
    assert len(q(db, "select event_id from suppression_causes where suppression_id = ?", sid)) == 3


def test_block_delay_and_auto_reply_never_suppress(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    for n in range(3):
        for path in (BLOCK, DELAY, AUTO):
            assert ingest(db, variant(path, n)).returncode == 0
    assert q(db, "select count(*) from suppressions") == [(0,)]
    kinds = q(db, "select kind, decision, count(*) from events group by kind, decision order by kind")
    assert kinds == [("auto-reply", "record", 3), ("bounce", "block", 3), ("delay", "delay", 3)]


def test_delays_do_not_count_toward_soft_suppression(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    for n in range(2):
        assert ingest(db, variant(DELAY, n)).returncode == 0
    expired = POSTFIX / "dsn-failed-452-4.2.2-expired.eml"  # same address, Action failed 4.2.2
    assert ingest(db, expired.read_bytes()).returncode == 0
    assert q(db, "select count(*) from suppressions") == [(0,)]


def test_complaint_suppresses_for_the_tenants_that_sent_to_the_address(tmp_path: Path, cfgfile) -> None:
    db = tmp_path / "s.db"
    sent = recorded(("acme", "redacted@example.net"), ("globex", "redacted@example.net"))
    assert ingest(db, ARF.read_bytes(), python_prelude=sent).returncode == 0
    rows = q(db, "select address, tenant, reason, category from suppressions order by tenant")
    # our record's tenants, never the report's enclosed Return-Path (example.ed.jp)
    assert rows == [("redacted@example.net", t, "complaint", "complaint") for t in ("acme", "globex")]
    # complaint_scope = "global" is for feedback-loop sources only: this one still suppresses per tenant
    db2 = tmp_path / "g.db"
    assert ingest(db2, ARF.read_bytes(), config=cfgfile(complaint_scope="global"), python_prelude=sent).returncode == 0
    assert q(db2, "select tenant from suppressions order by tenant") == [("acme",), ("globex",)]


def test_verp_token_gives_recipient_and_tenant(tmp_path: Path, cfgfile) -> None:
    from sidecar.bounce.verp import make_verp_token

    db = tmp_path / "s.db"
    cfg = cfgfile(verp_key=KEY)
    token = make_verp_token(KEY.encode(), "Redacted@Example.net", tenant="acme")
    assert ingest(db, ARF.read_bytes(), "--extension", token, config=cfg).returncode == 0
    assert q(db, "select address, tenant from suppressions") == [("redacted@example.net", "acme")]
    assert q(db, "select extension from raw_messages") == [(token,)]
    # a hard bounce is global even when the token names a tenant
    token = make_verp_token(KEY.encode(), "hard1@example.test", tenant="acme")
    assert ingest(db, HARD.read_bytes(), "--extension", token, config=cfg).returncode == 0
    assert ("hard1@example.test", "") in q(db, "select address, tenant from suppressions")


def test_bad_verp_signature_is_recorded_but_never_suppresses(tmp_path: Path, cfgfile) -> None:
    from sidecar.bounce.verp import make_verp_token

    db = tmp_path / "s.db"
    token = make_verp_token(b"another key", "hard1@example.test")
    r = ingest(db, HARD.read_bytes(), "--extension", token, config=cfgfile(verp_key=KEY))
    assert r.returncode == 0, r.stderr
    ((state, error),) = q(db, "select state, error from raw_messages")
    assert state == "bad-verp" and "signature" in error
    assert q(db, "select decision from events") == [("bad-verp",)]
    assert q(db, "select count(*) from suppressions") == [(0,)]


def test_malformed_mime_is_set_aside_unparsed(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    raw = (
        b"From: MAILER-DAEMON@x\nSubject: Undelivered Mail Returned to Sender\nContent-Type: multipart/report;"
        b' report-type=delivery-status; boundary="zzz"\n\n--zzz\nContent-Type: message/delivery-status\n\n'
        b"Reporting-MTA: dns; \x00\xff\xfe broken\n\n"
    )
    r = ingest(db, raw)
    assert r.returncode == 0, r.stderr
    assert q(db, "select state from raw_messages") == [("unparsed",)]
    assert ingest(db, b"\xff\xfe\x00 not mail at all").returncode == 0
    assert q(db, "select state from raw_messages order by id") == [("unparsed",), ("not-bounce",)]


def test_oversized_message_keeps_the_first_part(tmp_path: Path, cfgfile) -> None:
    db = tmp_path / "s.db"
    data = HARD.read_bytes() + b"x" * 5000
    r = ingest(db, data, config=cfgfile(max_message_size=2048))
    assert r.returncode == 0, r.stderr
    ((state, size, error, content),) = q(db, "select state, size, error, content from raw_messages")
    assert state == "unparsed" and size == len(data) and "truncated" in error
    import zlib

    assert zlib.decompress(content) == data[:2048]


def test_database_unavailable_exits_75(tmp_path: Path) -> None:
    r = ingest(tmp_path / "missing-dir" / "s.db", HARD.read_bytes())
    assert r.returncode == 75
    assert r.stderr.count(b"\n") == 1 and r.stderr.startswith(b"sidecar ingest: temporary failure")


def test_bad_config_exits_75(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[ingest]\nno_such_key = 1\n")
    r = ingest(tmp_path / "s.db", HARD.read_bytes(), config=bad)
    assert r.returncode == 75 and b"no_such_key" in r.stderr


def test_parser_crash_exits_75(tmp_path: Path) -> None:
    prelude = (
        "import sidecar.bounce.parse as p\n"
        "def boom(raw):\n    raise RuntimeError('injected parser crash')\n"
        "p.parse_message = boom"
    )
    r = ingest(tmp_path / "s.db", HARD.read_bytes(), python_prelude=prelude)
    assert r.returncode == 75 and b"injected parser crash" in r.stderr
    assert q(tmp_path / "s.db", "select count(*) from raw_messages") == [(0,)]


def test_locked_database_exits_75(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    assert ingest(db, variant(HARD, 0)).returncode == 0
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        r = ingest(db, variant(HARD, 1), timeout=90)  # waits out the 15 s busy timeout
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert r.returncode == 75, r.stderr
    assert b"locked" in r.stderr


def test_manual_suppression_is_not_downgraded(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    sent = recorded(("acme", "full1@example.test"))
    assert ingest(db, variant(SOFT, 0), python_prelude=sent).returncode == 0
    now = time.time()
    with sqlite3.connect(db) as c:
        c.execute(
            "insert into suppressions (address, tenant, reason, source, active, created_at, updated_at) "
            "values ('full1@example.test', '', 'manual', 'manual', 1, ?, ?)",
            (now, now),
        )
    for n in (1, 2):
        assert ingest(db, variant(SOFT, n), python_prelude=sent).returncode == 0
    assert q(db, "select reason, expires_at from suppressions") == [("manual", None)]
    assert q(db, "select decision from events order by id")[-1] == ("suppress-soft (covered)",)


def test_empty_message_is_set_aside(tmp_path: Path) -> None:
    r = ingest(tmp_path / "s.db", b"")
    assert r.returncode == 0, r.stderr
    assert q(tmp_path / "s.db", "select state from raw_messages") == [("not-bounce",)]
