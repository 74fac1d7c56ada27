"""The sidecar as the lab runs it: `sidecar serve` as a subprocess, the CLI for queries.

`serve` runs as root (like the Postfix master); `sidecar ingest` runs as the pipe user, so
the SQLite file and its directory belong to the pipe user (see prepare_db_dir).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import sqlite3
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

from lab_checks import LabError

from tests.harness.sidecar import BIN, SidecarProcess


def prepare_db_dir(path: Path, pipe_user: str, db_name: str = "sidecar.db") -> Path:
    """A DB directory and an empty SQLite file, both owned by the pipe user.

    SQLite creates database files 0644 whatever the umask, so a file that root's `serve`
    created would be read-only for the `ingest` that pipe(8) runs as the pipe user. An
    empty file is a valid empty database; root can write it anyway, and when SQLite runs
    as root it gives its -wal/-shm/-journal files the database file's owner.
    """
    user = pwd.getpwnam(pipe_user)
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, user.pw_uid, user.pw_gid)
    os.chmod(path, 0o755)
    db = path / db_name
    db.touch()
    os.chown(db, user.pw_uid, user.pw_gid)
    os.chmod(db, 0o644)
    return db


class SidecarServer(SidecarProcess):
    """The harness's ``SidecarProcess`` as the lab runs it: the config file is make_lab's,
    an optional extra unix-socket policy listener, and a LabError when it does not start."""

    error = LabError

    def __init__(self, root: Path, *, db_url: str) -> None:
        super().__init__(root, db_url, config_text=None, log_name="sidecar-serve.log")
        self.policy_unix: Path | None = None  # an extra unix-socket policy listener

    def policy_endpoints(self) -> list[str]:
        """Twisted endpoints; the first is the one Postfix is wired to."""
        endpoints = super().policy_endpoints()
        if self.policy_unix is not None:
            endpoints.insert(0, f"unix:{self.policy_unix}:mode=666")
        return endpoints


def sidecar_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN), *args], check=False, capture_output=True, text=True, timeout=timeout)


def sidecar_json(*args: str) -> list[dict[str, Any]]:
    """Run a `sidecar ... --json` query: a JSON list, or one JSON object a line."""
    result = sidecar_cli(*args, "--json")
    if result.returncode != 0:
        command = " ".join(args)
        raise AssertionError(f"`sidecar {command} --json` exited {result.returncode}: {result.stderr}{result.stdout}")
    text = result.stdout.strip()
    if text.startswith("["):
        return list(json.loads(text))
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def command_missing(*args: str) -> bool:
    """True when this sidecar has no such subcommand (argparse: invalid choice)."""
    result = sidecar_cli(*args, "--help")
    return result.returncode == 2 and "invalid choice" in result.stderr


def db_rows(db_url: str, table: str) -> list[dict[str, Any]]:
    """Rows of a table in the lab's SQLite DB, read-only (for queries the CLI lacks)."""
    path = db_url.removeprefix("sqlite:///")
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(row) for row in conn.execute(f"SELECT * FROM {table} ORDER BY id")]


def db_scalar(db_url: str, sql: str) -> Any:
    """One value from the lab's database (SQLite read-only, or any SQLAlchemy URL)."""
    if db_url.startswith("sqlite:///"):
        path = db_url.removeprefix("sqlite:///")
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)) as conn:
            return conn.execute(sql).fetchone()[0]
    from sqlalchemy import create_engine, text

    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return conn.execute(text(sql)).scalar()
    finally:
        engine.dispose()


def timestamp(value: Any) -> float | None:
    """An ISO 8601 time (``...Z``) or epoch seconds from the CLI's JSON -> epoch seconds."""
    if value in (None, ""):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


def flag(value: Any) -> bool | None:
    """A nullable boolean from the CLI's JSON (true/false) or SQLite (1/0)."""
    return None if value is None else bool(value)
