"""One-line error messages for the command line and the log (never a traceback for an expected failure)."""

from __future__ import annotations


def one_line(e: BaseException, limit: int = 400, *, with_type: bool = False) -> str:
    """``e`` as a single line: whitespace collapsed, SQLAlchemy's wrapper and "Background on this
    error" link dropped (the driver's own message is what an operator can act on).
    ``with_type``: ``Type: message``, for logs and records where the kind of failure matters."""
    orig = getattr(e, "orig", None)  # sqlalchemy.exc.DBAPIError: the driver's exception
    if isinstance(orig, BaseException):
        e = orig
    text = " ".join(str(e).split()) or type(e).__name__
    if with_type:
        text = f"{type(e).__name__}: {text}"
    return text[:limit]


def is_database_error(e: BaseException) -> bool:
    """A failure to reach or use the database (or a schema Alembic cannot place), not a bug."""
    try:
        from alembic.util.exc import CommandError
        from sqlalchemy.exc import SQLAlchemyError
    except ImportError:  # pragma: no cover - both are dependencies
        return False
    from sidecar.store.db import DatabaseUnavailable

    return isinstance(e, (SQLAlchemyError, CommandError, DatabaseUnavailable))
