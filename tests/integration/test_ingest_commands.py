"""sidecar parse / import / replay, run as commands against real SQLite files."""

from __future__ import annotations

import json
import mailbox
import sqlite3
import subprocess
from pathlib import Path

from tests.harness.ingest import ARF, AUTO, BLOCK, HARD, KEY, SOFT, q, variant
from tests.harness.sidecar import BIN


def run(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(BIN), *args], input=stdin, capture_output=True, timeout=120)


def test_parse_json_stdin_prints_a_bare_list() -> None:
    r = run("parse", "--json", stdin=HARD.read_bytes())
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert isinstance(out, list) and out[0]["address"] == "hard1@example.test"
    assert out[0]["category"] == "invalid-recipient" and out[0]["hard"] is True


def test_parse_json_files_one_line_per_file_in_order(tmp_path: Path) -> None:
    missing = tmp_path / "missing.eml"
    r = run("parse", "--json", str(HARD), str(BLOCK), str(missing))
    lines = [json.loads(x) for x in r.stdout.decode().splitlines()]
    assert [x["file"] for x in lines] == [str(HARD), str(BLOCK), str(missing)]
    assert lines[1]["results"][0]["category"] == "block"
    assert lines[2]["results"] == [] and "error" in lines[2]
    r = run("parse", "--json", "--paths-from-stdin", stdin=f"{HARD}\n{ARF}\n".encode())
    lines = [json.loads(x) for x in r.stdout.decode().splitlines()]
    assert [x["file"] for x in lines] == [str(HARD), str(ARF)]
    assert lines[1]["results"][0]["category"] == "complaint"


def test_parse_table() -> None:
    r = run("parse", str(HARD))
    assert r.returncode == 0 and b"hard1@example.test" in r.stdout and b"invalid-recipient" in r.stdout


def test_import_mbox(tmp_path: Path) -> None:
    box = tmp_path / "bounces.mbox"
    mb = mailbox.mbox(str(box))
    for raw in (HARD.read_bytes(), variant(SOFT, 1), BLOCK.read_bytes(), AUTO.read_bytes(), HARD.read_bytes()):
        mb.add(raw)
    mb.flush()
    db = tmp_path / "s.db"
    r = run("import", "--db", f"sqlite:///{db}", str(box))
    assert r.returncode == 0, r.stderr
    assert b"imported 5 messages" in r.stdout and b"1 duplicates" in r.stdout and b"1 suppressions" in r.stdout
    assert r.stderr.count(b"\n") == 1  # not a tty: one final progress line
    assert q(db, "select count(*) from raw_messages") == [(4,)]
    assert q(db, "select address, reason from suppressions") == [("hard1@example.test", "hard bounce")]
    r = run("import", "--no-progress", "--db", f"sqlite:///{db}", str(box))
    assert b"5 duplicates" in r.stdout and r.stderr == b""


def test_import_maildir_with_verp_from_delivered_to(tmp_path: Path) -> None:
    from sidecar.bounce.verp import make_verp_token

    key = "k"
    token = make_verp_token(key.encode(), "redacted@example.net", tenant="acme")
    md = mailbox.Maildir(str(tmp_path / "Maildir"))
    md.add(f"Delivered-To: bounces+{token}@bounce.example\n".encode() + ARF.read_bytes())
    md.add(HARD.read_bytes())
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[ingest]\nverp_key = "{key}"\n')
    db = tmp_path / "s.db"
    r = run("import", "--config", str(cfg), "--db", f"sqlite:///{db}", "--no-progress", str(tmp_path / "Maildir"))
    assert r.returncode == 0, r.stderr
    assert b"imported 2 messages" in r.stdout
    assert sorted(q(db, "select address, tenant from suppressions")) == [
        ("hard1@example.test", ""),
        ("redacted@example.net", "acme"),
    ]


def test_import_require_record_asks_for_corroboration(tmp_path: Path) -> None:
    box = tmp_path / "bounces.mbox"
    mb = mailbox.mbox(str(box))
    mb.add(HARD.read_bytes())
    mb.flush()
    db = tmp_path / "s.db"
    r = run("import", "--no-progress", "--require-record", "--db", f"sqlite:///{db}", str(box))
    assert r.returncode == 0, r.stderr
    assert b"0 suppressions" in r.stdout
    assert q(db, "select address, decision from events") == [("hard1@example.test", "uncorroborated")]


def test_import_rejects_a_non_mailbox(tmp_path: Path) -> None:
    f = tmp_path / "x.txt"
    f.write_text("hello\n")
    r = run("import", "--db", f"sqlite:///{tmp_path / 's.db'}", str(f))
    assert r.returncode == 2 and b"not an mbox" in r.stderr


def _record_with(
    db: Path, parse, raws: list[bytes], config: Path | None = None, extensions: dict[bytes, str] | None = None
) -> None:
    from sidecar.bounce.envelope import Envelope
    from sidecar.bounce.record import Recorder
    from sidecar.config import load_config
    from sidecar.store.db import make_engine, upgrade

    cfg = load_config(config, {"database.url": f"sqlite:///{db}"})
    engine = make_engine(cfg.database.url)
    upgrade(engine)
    rec = Recorder(cfg, engine, parse)
    for raw in raws:
        rec.record(raw, Envelope(sender="MAILER-DAEMON", queue_id="Q", extension=(extensions or {}).get(raw, "")))
    engine.dispose()


def test_replay_dry_run_then_apply(tmp_path: Path) -> None:
    from sidecar.bounce.parse.results import Category, FailedRecipient, Kind, ParsedMessage

    def old_parser(raw: bytes) -> ParsedMessage:  # a parser that missed the hard bounce, saw a ghost
        if b"hard1@" in raw:
            return ParsedMessage(Kind.BOUNCE, [])
        ghost = FailedRecipient("ghost@example.test", Category.UNKNOWN, "undefined", None, None, "failed", None, None)
        return ParsedMessage(Kind.BOUNCE, [ghost])

    from sidecar.bounce.verp import make_verp_token

    db = tmp_path / "s.db"
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[ingest]\nverp_key = "{KEY}"\n')  # the hard bounce came with a VERP token: corroborated
    token = make_verp_token(KEY.encode(), "hard1@example.test")
    _record_with(db, old_parser, [HARD.read_bytes(), BLOCK.read_bytes()], cfg, {HARD.read_bytes(): token})
    assert q(db, "select state from raw_messages order by id") == [("unparsed",), ("parsed",)]
    url = f"sqlite:///{db}"

    r = run("replay", "--config", str(cfg), "--db", url)
    assert r.returncode == 0, r.stderr
    text = r.stdout.decode()
    assert "unparsed -> parsed" in text and "+ hard1@example.test" in text and "suppress-hard" in text
    assert "~ ghost@example.test" not in text and "- ghost@example.test" in text
    assert "+ blocked1@example.test" in text and "dry run" in text
    assert q(db, "select count(*) from suppressions") == [(0,)]  # nothing written
    assert q(db, "select state from raw_messages order by id") == [("unparsed",), ("parsed",)]

    r = run("replay", "--config", str(cfg), "--db", url, "--state", "unparsed", "--json")
    lines = [json.loads(x) for x in r.stdout.decode().splitlines()]
    assert lines[0]["id"] == 1 and lines[-1]["summary"]["examined"] == 1

    r = run("replay", "--config", str(cfg), "--db", url, "--apply")
    assert r.returncode == 0 and "applied" in r.stdout.decode()
    assert q(db, "select address, reason from suppressions") == [("hard1@example.test", "hard bounce")]
    assert q(db, "select state from raw_messages order by id") == [("parsed",), ("parsed",)]
    assert q(db, "select decision from events where address = 'ghost@example.test'") == [("superseded",)]
    ((sid,),) = q(db, "select id from suppressions")
    assert len(q(db, "select event_id from suppression_causes where suppression_id = ?", sid)) == 1

    r = run("replay", "--config", str(cfg), "--db", url, "--apply", "--json")  # idempotent
    summary = json.loads(r.stdout.decode().splitlines()[-1])["summary"]
    assert summary["changed"] == 0 and summary["examined"] == 2
    with sqlite3.connect(db) as c:
        assert c.execute("select count(*) from events where decision != 'superseded'").fetchone() == (2,)
