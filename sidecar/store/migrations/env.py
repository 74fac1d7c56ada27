"""Alembic environment: run with a connection passed in by sidecar.store.db.upgrade."""

from alembic import context
from sqlalchemy import create_engine

from sidecar.store.models import Base

config = context.config
target_metadata = Base.metadata


def run() -> None:
    conn = config.attributes.get("connection")
    if conn is None:
        url = config.get_main_option("sqlalchemy.url")
        if not url:
            raise RuntimeError("alembic: no sqlalchemy.url given")
        engine = create_engine(url)
        with engine.begin() as conn:
            _migrate(conn)
    else:
        _migrate(conn)


def _migrate(conn) -> None:  # type: ignore[no-untyped-def]
    context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=conn.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


run()
