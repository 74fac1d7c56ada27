"""Log set-up for every command: text lines (the default) or one JSON object per line.

``--log-format json`` or ``logging.format = "json"`` gives log shippers ``time``, ``level``,
``logger`` and ``message`` fields (and ``exc_info`` with a traceback), through python-json-logger.
"""

from __future__ import annotations

import logging
import sys

FORMATS = ("text", "json")
TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def formatter(fmt: str) -> logging.Formatter:
    if fmt == "json":
        from pythonjsonlogger.json import JsonFormatter

        return JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            datefmt="%Y-%m-%dT%H:%M:%S%z",
        )
    return logging.Formatter(TEXT)


def setup_logging(level: str, fmt: str = "text") -> None:
    """The root logger at ``level`` (DEBUG, INFO, WARNING, ERROR), to stderr, in ``fmt``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(fmt))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    logging.getLogger("alembic").setLevel(logging.WARNING)
