"""Engine set-up and schema upgrades (Alembic), for SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import os
from importlib.resources import files
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, ProgrammingError

log = logging.getLogger("sidecar.store")

# package data; Alembic needs a directory on disk (a wheel is never installed zipped)
MIGRATIONS = Path(str(files("sidecar.store").joinpath("migrations")))
PG_CONNECT_TIMEOUT = 10  # seconds


class DatabaseUnavailable(RuntimeError):
    """The database could not be reached or used: callers treat this as transient."""


def normalise_url(url: str) -> str:
    """Accept plain ``postgresql://`` URLs and use psycopg 3 for them."""
    u = make_url(url)
    if u.drivername in ("postgresql", "postgres"):
        u = u.set(drivername="postgresql+psycopg")
    return u.render_as_string(hide_password=False)


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL (None for another database or an in-memory one)."""
    u = make_url(normalise_url(url))
    db = u.database or ""
    if u.get_backend_name() != "sqlite" or not db or db == ":memory:" or db.startswith("file:"):
        return None
    return Path(db)


def make_engine(url: str, *, create_dir: bool = True, pool_size: int = 5) -> Engine:
    url = normalise_url(url)
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        db = u.database or ""
        if db and db != ":memory:" and not db.startswith("file:"):
            if create_dir:
                Path(db).parent.mkdir(parents=True, exist_ok=True)
            if Path(db).parent.is_dir():
                create_private(db)
        engine = create_engine(url, connect_args={"timeout": 15, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=15000")
            cur.close()

        return engine
    # A host that drops packets must not hold start-up (or a database thread) for the TCP timeout.
    return create_engine(
        url, pool_size=pool_size, pool_pre_ping=True, connect_args={"connect_timeout": PG_CONNECT_TIMEOUT}
    )


def dialect_insert(conn: Connection, table: Any) -> Any:
    """The connection's dialect INSERT for ``table``: it has ``on_conflict_do_update/do_nothing``."""
    return insert_for(conn.dialect.name, table)


def insert_for(dialect: str, table: Any) -> Any:
    """The dialect INSERT by dialect name (for statements built once, ahead of any connection)."""
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


DB_FILE_MODE = 0o640


def create_private(path: str) -> None:
    """Create the SQLite file ``path`` (if missing) as 0640: it holds raw bounces and addresses.

    SQLite gives its -wal and -shm files the database file's mode, so they follow.
    An empty file is a valid empty database.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, DB_FILE_MODE)
    except OSError:  # exists already; or cannot be created, which SQLite then reports itself
        return
    try:
        os.fchmod(fd, DB_FILE_MODE)  # whatever the umask
    finally:
        os.close(fd)


# pg_advisory_xact_lock key for schema upgrades: any constant, the same in every process.
UPGRADE_LOCK = 0x73696465636172  # "sidecar"


def _alembic_config(engine: Engine):  # type: ignore[no-untyped-def]
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Create or upgrade the schema to ``revision``; at head, also re-create any index of the
    suppressions table that an interrupted bulk import left dropped (sidecar.store.indexes)."""
    from sidecar.store.indexes import restore_indexes

    if revision == "head" and _stamped(engine) == SCHEMA_HEAD:
        restore_indexes(engine)  # the usual case, without Alembic (~0.2 s of a command's start)
        return
    from alembic import command
    from alembic.script import ScriptDirectory

    cfg = _alembic_config(engine)
    if revision == "head" and current_revision(engine) in ScriptDirectory.from_config(cfg).get_heads():
        restore_indexes(engine)  # one catalogue read, unless an interrupted bulk import left some dropped
        return  # the usual case, without taking the lock: nothing to do
    with engine.begin() as conn:
        # One upgrade at a time: several relays (or serve and `sidecar db upgrade`) starting
        # together would otherwise all create the same tables. Held until commit.
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({UPGRADE_LOCK})")
        elif conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")  # the write lock now; others wait (busy_timeout)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    if revision == "head":
        restore_indexes(engine)


# The migrations' head, known without Alembic (importing it and reading the scripts is ~0.2 s of
# every command's start); a test holds it equal to head_revision().
SCHEMA_HEAD = "0005"


def _stamped(engine: Engine) -> str | None:
    """The revision the database is stamped with, read directly (None: no stamp table, or not one)."""
    try:
        with engine.connect() as conn:
            rows = conn.exec_driver_sql("SELECT version_num FROM alembic_version").fetchall()
    except Exception:  # no table yet (a new database): Alembic's path creates it
        return None
    return str(rows[0][0]) if len(rows) == 1 else None


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str:
    """The schema revision this code upgrades to (the migrations' single head)."""
    from alembic.config import Config as AlembicConfig
    from alembic.script import ScriptDirectory

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    (head,) = ScriptDirectory.from_config(cfg).get_heads()
    return str(head)


def ensure_schema(engine: Engine) -> None:
    """Upgrade only when the tables are missing (cheap check; Alembic is slow to import)."""
    from sidecar.store.models import Event, RawMessage

    try:
        with engine.connect() as conn:
            conn.execute(select(RawMessage.id).limit(1))
            conn.execute(select(Event.id).limit(1))
        return
    except (OperationalError, ProgrammingError) as e:
        if "no such table" not in str(e) and "does not exist" not in str(e):
            raise
    upgrade(engine)
