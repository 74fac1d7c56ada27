"""What the command line prints: tables, JSON lines, the progress line, one-line errors, exit codes.

Cheap to import (``sidecar ingest`` takes its exit codes from here once per bounce): the heavier
modules are imported inside the functions.
"""

from __future__ import annotations

import sys
import time

TYPE_CHECKING = False  # typing costs ~10 ms at start-up, paid once per bounce
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Iterable
    from typing import Any

    from sidecar.config import Config

EX_OK, EX_USAGE, EX_CONFIG, EX_TEMPFAIL, EX_UNAVAILABLE = 0, 2, 78, 75, 69
EX_SIGPIPE = 128 + 13  # what a shell reports for a tool killed by SIGPIPE


def table(rows: Iterable[dict[str, Any]], cols: list[str]) -> None:
    cells = [{c: "-" if r.get(c) in (None, "") else str(r.get(c)) for c in cols} for r in rows]
    width = {c: min(max([len(c)] + [len(r[c]) for r in cells]), 48) for c in cols}
    print("  ".join(c.upper().ljust(width[c]) for c in cols).rstrip())
    for r in cells:
        print("  ".join(r[c][: width[c]].ljust(width[c]) for c in cols).rstrip())


def emit(args: argparse.Namespace, data: Any, cols: list[str] | None = None) -> None:
    """--json: one JSON object per line (an iterator is streamed); else a table for people."""
    import json
    from collections.abc import Iterator

    items = data if isinstance(data, (list, Iterator)) else [data]
    if args.json:
        for item in items:
            print(json.dumps(item))
    elif cols is not None:
        table(list(items), cols)
    else:
        print(json.dumps(data, indent=2))


def progress(label: str, every: int = 10000) -> Callable[[int], None]:
    """A progress line on stderr for row counts: redrawn in place on a terminal, a line each ``every`` rows."""
    t0, tty, last = time.monotonic(), sys.stderr.isatty(), [0]

    def show(n: int) -> None:
        if n - last[0] < every:
            return
        last[0] = n
        line = f"{label}: {n:,} rows ({n / max(time.monotonic() - t0, 1e-6):,.0f}/s)"
        print(("\r" + line) if tty else line, end="" if tty else "\n", file=sys.stderr, flush=True)

    return show


def handled(fn: Callable[[argparse.Namespace, Config], int]) -> Callable[[argparse.Namespace, Config], int]:
    """Errors become one line on stderr: exit 1 for "not found"/unreachable, 2 for bad input."""

    def run(args: argparse.Namespace, cfg: Config) -> int:
        from sidecar.cli.api_client import ApiClientError

        try:
            return fn(args, cfg)
        except ApiClientError as e:
            print(f"sidecar: {e}", file=sys.stderr)
            return 1 if e.status in (0, 404) else 2
        except ValueError as e:  # also the API's queries' InvalidParameter (a ValueError)
            print(f"sidecar: {e}", file=sys.stderr)
            return 2

    run.__name__ = fn.__name__
    return run
