"""``sidecar db backup PATH``: SQLite's online backup API while serve runs, one file out."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sidecar.cli.output import EX_USAGE
from tests.harness.sidecar import SidecarProcess, run_cli


def test_backup_while_serving_is_a_consistent_single_file(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/s.db"
    sc = SidecarProcess(tmp_path / "serve", db).start()
    try:
        run_cli("suppressions", "add", "gone@example.com", "--reason", "hard", db=db)
        dest = tmp_path / "backup" / "sidecar.db"
        dest.parent.mkdir()
        r = run_cli("db", "backup", str(dest), db=db)
        assert f"to {dest}" in r.stdout, r
        assert (tmp_path / "s.db-wal").exists()  # the source is in WAL mode: a file copy could miss it
        assert sorted(p.name for p in dest.parent.iterdir()) == ["sidecar.db"]  # no -wal, no partial file
        assert oct(dest.stat().st_mode & 0o777) == "0o600"
        with sqlite3.connect(dest) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
        listed = run_cli("suppressions", "list", "--json", db=f"sqlite:///{dest}")
        assert "gone@example.com" in listed.stdout

        again = run_cli("db", "backup", str(dest), db=db, check=False)
        assert again.returncode == EX_USAGE and "exists (--force replaces it)" in again.stderr
        assert run_cli("db", "backup", str(dest), "--force", db=db).returncode == 0
    finally:
        sc.stop()


def test_backup_refuses_postgresql_and_a_missing_database(tmp_path: Path) -> None:
    r = run_cli("db", "backup", str(tmp_path / "x.db"), db="postgresql://u@127.0.0.1:1/x", check=False)
    assert r.returncode == EX_USAGE and "pg_dump" in r.stderr and r.stderr.count("\n") == 1
    r = run_cli("db", "backup", str(tmp_path / "x.db"), db=f"sqlite:///{tmp_path}/none.db", check=False)
    assert r.returncode == 69 and "no database at" in r.stderr and r.stderr.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == []
