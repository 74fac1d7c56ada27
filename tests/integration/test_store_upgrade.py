"""Schema upgrades one at a time (a database lock), and a SQLite file only its owner and group read."""

from __future__ import annotations

import os
import stat
import subprocess
import threading
from pathlib import Path

from sidecar.store.db import current_revision, head_revision, make_engine, upgrade
from tests.harness.sidecar import BIN, SidecarProcess, run_cli

HEAD = head_revision()


def concurrent_cli_upgrades(url: str, n: int) -> list[subprocess.CompletedProcess[str]]:
    procs = [
        subprocess.Popen(
            [str(BIN), "db", "upgrade", "--db", url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(n)
    ]
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=120)
        out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return out


def concurrent_upgrades(url: str, n: int) -> list[BaseException]:
    """``n`` engines upgrading the same fresh database, released together."""
    engines = [make_engine(url) for _ in range(n)]
    for e in engines:  # connect first: only the upgrades themselves race
        e.connect().close()
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []

    def run(engine: object) -> None:
        barrier.wait()
        try:
            upgrade(engine)  # type: ignore[arg-type]
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for e in engines:
        e.dispose()
    return errors


def test_concurrent_upgrades_of_a_fresh_postgresql_database(pg_url: str, postgres_server) -> None:
    assert concurrent_upgrades(pg_url, 4) == []
    assert current_revision(make_engine(pg_url)) == HEAD
    fresh = postgres_server.create_database("upgrade_cli")
    results = concurrent_cli_upgrades(fresh, 4)
    assert [r.returncode for r in results] == [0] * 4, [r.stderr for r in results]
    assert all(f"at schema revision {HEAD}" in r.stdout for r in results)


def test_concurrent_upgrades_of_a_fresh_sqlite_database(tmp_path: Path) -> None:
    assert concurrent_upgrades(f"sqlite:///{tmp_path}/a.db", 4) == []
    results = concurrent_cli_upgrades(f"sqlite:///{tmp_path}/b.db", 4)
    assert [r.returncode for r in results] == [0] * 4, [r.stderr for r in results]


def test_sqlite_files_are_not_world_readable(tmp_path: Path) -> None:
    old = os.umask(0o022)  # the usual umask: the old code made the file 0644
    try:
        db = tmp_path / "data" / "s.db"
        sidecar = SidecarProcess(tmp_path / "service", f"sqlite:///{db}")
        sidecar.start()
        try:
            assert run_cli("suppressions", "add", "a@example.com", db=f"sqlite:///{db}").returncode == 0
            modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in db.parent.glob("s.db*")}
            assert modes == {"s.db": 0o640, "s.db-wal": 0o640, "s.db-shm": 0o640}, modes
        finally:
            sidecar.stop()
    finally:
        os.umask(old)


def test_the_head_known_without_alembic_is_the_migrations_head(tmp_path):
    from sidecar.store.db import SCHEMA_HEAD, _stamped

    assert SCHEMA_HEAD == HEAD  # a new migration must move SCHEMA_HEAD too
    engine = make_engine(f"sqlite:///{tmp_path}/s.db")
    assert _stamped(engine) is None  # a new database: Alembic's path creates the schema
    upgrade(engine)
    assert _stamped(engine) == SCHEMA_HEAD == current_revision(engine)
    engine.dispose()
