"""``sidecar db backup PATH``: a consistent copy of the SQLite database while the service runs.

SQLite in WAL mode keeps recent transactions in ``sidecar.db-wal``: copying the database file
alone (cp, rsync) can give a file without them, or a torn one. This uses SQLite's online
backup API (``sqlite3.Connection.backup``) in steps, so writers wait at most one step, then
writes the copy as one self-contained file (journal_mode DELETE), checked with
``PRAGMA integrity_check``, and renames it into place. PostgreSQL is backed up with pg_dump.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sqlite3
import sys
from pathlib import Path

from sidecar.cli.output import EX_USAGE
from sidecar.config import Config

PAGES_PER_STEP = 1024  # 4 MiB with 4 KiB pages: each step holds the database's lock briefly


def cmd_db_backup(args: argparse.Namespace, cfg: Config) -> int:
    from sidecar.store.db import DatabaseUnavailable, sqlite_path

    source = sqlite_path(cfg.database.url)
    if source is None:
        print("sidecar db backup: only for SQLite; back up PostgreSQL with pg_dump (docs/deploy.md)", file=sys.stderr)
        return EX_USAGE
    if not source.exists():
        raise DatabaseUnavailable(f"no database at {source}")
    dest = Path(args.path).absolute()
    if dest.exists() and not args.force:
        print(f"sidecar db backup: {dest} exists (--force replaces it)", file=sys.stderr)
        return EX_USAGE
    if dest.resolve() == source.resolve():
        print(f"sidecar db backup: {dest} is the database itself", file=sys.stderr)
        return EX_USAGE
    partial = dest.with_name(f".{dest.name}.partial")
    try:
        copy(source, partial)
        os.replace(partial, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    print(f"backed up {source} to {dest} ({dest.stat().st_size} bytes)")
    return 0


def copy(source: Path, dest: Path) -> None:
    """The online backup of ``source`` into a new single-file database ``dest``."""
    from sidecar.store.db import DatabaseUnavailable

    with contextlib.suppress(FileNotFoundError):
        dest.unlink()
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # a copy of the data: private
    os.close(fd)
    src = sqlite3.connect(source, timeout=15)
    dst = sqlite3.connect(dest)
    try:
        src.backup(dst, pages=PAGES_PER_STEP, sleep=0.01)
        dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
        (check,) = dst.execute("PRAGMA integrity_check").fetchone()
        if check != "ok":
            raise DatabaseUnavailable(f"the copy failed its integrity check: {check}")
    except sqlite3.Error as e:
        raise DatabaseUnavailable(f"backup of {source}: {e}") from None
    finally:
        dst.close()
        src.close()
