"""The hand-off socket: a real HandoffService (in a subprocess with its own reactor) and real clients."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecar.bounce.verp import make_verp_token
from tests.harness.ingest import HARD, KEY, SOFT, THIN, ingest, q, variant

SERVICE = r"""
import sys
from twisted.internet import reactor
from twisted.python.threadpool import ThreadPool
from sidecar.config import load_config
from sidecar.store.db import make_engine, upgrade
from sidecar.bounce.handoff import HandoffService

cfg = load_config(sys.argv[1])
engine = make_engine(cfg.database.url)
upgrade(engine)
pool = ThreadPool(1, 4, "db")
pool.start()
svc = HandoffService(cfg, engine, reactor, pool)

def ready():
    svc.startService()
    print("ready", flush=True)

def stop():
    d = svc.stopService()
    pool.stop()
    return d

reactor.callWhenRunning(ready)
reactor.addSystemEventTrigger("before", "shutdown", stop)
reactor.run()
"""


ENTRIES = ["cli", "thin"]  # `sidecar ingest`, and the thin entry pipe(8) runs (sidecar.bounce.pipe_entry)


def write_config(path: Path, sock: Path, db: Path) -> Path:
    path.write_text(f'[database]\nurl = "sqlite:///{db}"\n[ingest]\nsocket = "{sock}"\nverp_key = "{KEY}"\n')
    return path


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[Path, Path, Path]]:
    """(config, socket, service database) with a HandoffService running."""
    sock, db = tmp_path / "run" / "ingest.sock", tmp_path / "service.db"
    cfg = write_config(tmp_path / "service.toml", sock, db)
    script = tmp_path / "service.py"
    script.write_text(SERVICE)
    proc = subprocess.Popen([sys.executable, str(script), str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line == b"ready\n", proc.stderr.read() if proc.stderr else line
    yield cfg, sock, db
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)
    assert not sock.exists()  # removed on stop


@pytest.mark.parametrize("entry", ENTRIES)
def test_handoff_records_in_the_service(tmp_path: Path, service, entry: str) -> None:
    cfg, sock, db = service
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o660
    # The client's own database is unusable: success proves the service recorded the message.
    unusable = tmp_path / "missing-dir" / "client.db"
    verp = ("--extension", make_verp_token(KEY.encode(), "full1@example.test"))  # corroborates the address
    for n in range(3):
        r = ingest(unusable, variant(SOFT, n), *verp, config=cfg, entry=entry)
        assert r.returncode == 0, r.stderr
    r = ingest(unusable, variant(SOFT, 0), *verp, config=cfg, entry=entry)  # duplicate
    assert r.returncode == 0, r.stderr
    assert q(db, "select count(*) from raw_messages") == [(3,)]
    assert q(db, "select reason from suppressions") == [("soft bounces",)]


@pytest.mark.parametrize("entry", ENTRIES)
def test_handoff_tempfail_when_the_service_database_is_locked(tmp_path: Path, service, entry: str) -> None:
    cfg, sock, db = service
    unusable = tmp_path / "missing-dir" / "client.db"
    assert ingest(unusable, variant(HARD, 0), config=cfg, entry=entry).returncode == 0
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        r = ingest(unusable, variant(HARD, 1), config=cfg, timeout=90, entry=entry)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert r.returncode == 75 and b"TEMPFAIL" in r.stderr and b"locked" in r.stderr


@pytest.mark.parametrize("entry", ENTRIES)
def test_fallback_when_the_socket_is_missing(tmp_path: Path, entry: str) -> None:
    db = tmp_path / "s.db"
    cfg = write_config(tmp_path / "c.toml", tmp_path / "nothing-here.sock", db)
    assert ingest(db, HARD.read_bytes(), config=cfg, entry=entry).returncode == 0
    assert q(db, "select state from raw_messages") == [("parsed",)]


@pytest.mark.parametrize("entry", ENTRIES)
def test_fallback_when_the_socket_is_stale(tmp_path: Path, entry: str) -> None:
    db, sock = tmp_path / "s.db", tmp_path / "stale.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(sock))
    s.close()  # the file stays, nobody listens
    cfg = write_config(tmp_path / "c.toml", sock, db)
    assert ingest(db, HARD.read_bytes(), config=cfg, entry=entry).returncode == 0
    assert q(db, "select count(*) from raw_messages") == [(1,)]


def fake_service(sock: Path, reply: bytes | None) -> threading.Thread:
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(sock))
    srv.listen(1)

    def serve() -> None:
        conn, _ = srv.accept()
        buf = b""
        while b"\n" not in buf:
            buf += conn.recv(65536)
        head, _, body = buf.partition(b"\n")
        left = json.loads(head)["length"] - len(body)
        while left > 0:
            left -= len(conn.recv(65536))
        if reply is not None:
            conn.sendall(reply)
        conn.close()
        srv.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("entry", ENTRIES)
def test_fallback_when_the_service_drops_before_replying(tmp_path: Path, entry: str) -> None:
    db, sock = tmp_path / "s.db", tmp_path / "drop.sock"
    t = fake_service(sock, None)
    assert (
        ingest(db, HARD.read_bytes(), config=write_config(tmp_path / "c.toml", sock, db), entry=entry).returncode == 0
    )
    t.join(5)
    assert q(db, "select count(*) from raw_messages") == [(1,)]


@pytest.mark.parametrize("entry", ENTRIES)
def test_tempfail_reply_exits_75(tmp_path: Path, entry: str) -> None:
    db, sock = tmp_path / "s.db", tmp_path / "tf.sock"
    t = fake_service(sock, b"TEMPFAIL database unavailable\n")
    r = ingest(db, HARD.read_bytes(), config=write_config(tmp_path / "c.toml", sock, db), entry=entry)
    t.join(5)
    assert r.returncode == 75 and b"database unavailable" in r.stderr
    assert not db.exists() or q(db, "select count(*) from raw_messages") == [(0,)]


def test_thin_entry_hands_off_without_the_heavy_imports(tmp_path: Path) -> None:
    """What keeps the pipe cheap: the hand-off path imports neither site nor socket, json, re,
    argparse, typing, tomllib, SQLAlchemy or Twisted (each costs milliseconds per bounce)."""
    db, sock = tmp_path / "s.db", tmp_path / "ok.sock"
    t = fake_service(sock, b"OK parsed id=1 recipients=1 suppressions=0\n")
    args = [f"--config={write_config(tmp_path / 'c.toml', sock, db)}", "--sender=MAILER-DAEMON", "--extension="]
    cmd = [*THIN[:1], "-X", "importtime", *THIN[1:], *args]
    r = subprocess.run(cmd, input=HARD.read_bytes(), capture_output=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    t.join(5)
    assert r.returncode == 0, r.stderr
    imported = {line.split("|")[-1].strip() for line in r.stderr.decode().splitlines() if "|" in line}
    assert "sidecar.bounce.pipe" in imported
    heavy = {"site", "socket", "json", "re", "argparse", "typing", "tomllib", "sqlalchemy", "twisted"}
    assert not heavy & imported
    assert not db.exists()  # nothing recorded in-process


def test_service_removes_a_stale_socket_and_refuses_a_live_one(tmp_path: Path) -> None:
    from sidecar.bounce.handoff import remove_stale_socket

    sock = tmp_path / "x.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(sock))
    s.listen(1)
    with pytest.raises(RuntimeError, match="in use"):
        remove_stale_socket(str(sock))
    s.close()
    remove_stale_socket(str(sock))
    assert not sock.exists()
    sock.write_text("not a socket")
    with pytest.raises(RuntimeError, match="not a socket"):
        remove_stale_socket(str(sock))
