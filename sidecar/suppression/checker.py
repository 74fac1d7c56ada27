"""Checking an import file in a child process while this one stages what it has checked.

The check (CSV reading, address syntax, text fields, times) is Python on one core; staging the
rows (SQLite binding them, or the COPY to PostgreSQL) is the other half of the first pass.
A forked child runs ``check_batches`` over the file and hands each batch of checked rows
over a pipe (a uniform batch as its addresses and their shared values), so the two halves run
on two cores. Nothing changes in what is checked or in the errors: a bad row's ValueError
("line N: field: problem") is raised here, in the parent, and the child stops at it. The pipe
is bounded (the child waits while it is full), so memory stays flat.

Only for a CSV read from a file descriptor (the CLI's file or stdin), in a process running no
other thread (a fork copies only the calling thread): otherwise ``checked`` checks in-process.
"""

from __future__ import annotations

import contextlib
import fcntl
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from sidecar.suppression.rows import Batch, CsvRows, check_batches

PIPE_BYTES = 1 << 20  # Linux's default limit for an unprivileged process (fs.pipe-max-size)


def checked(rows: Iterable[Any], canon: Callable[[str], str], **kw: Any) -> Iterator[Batch]:
    """``check_batches(rows, canon, **kw)``, in a child process when ``rows`` can be read there."""
    if _forkable(rows):
        return _from_child(rows, canon, kw)  # type: ignore[arg-type]
    return check_batches(rows, canon, **kw)


def _forkable(rows: Iterable[Any]) -> bool:
    if not isinstance(rows, CsvRows) or threading.active_count() != 1:
        return False
    if "fork" not in multiprocessing.get_all_start_methods():
        return False
    try:
        rows.fh.fileno()
    except (AttributeError, OSError, ValueError):  # io.StringIO and friends: no descriptor
        return False
    return True


def _child(out: Any, rows: CsvRows, canon: Callable[[str], str], kw: dict[str, Any]) -> None:
    try:
        for batch in check_batches(rows, canon, **kw):
            out.send(("rows", batch))
        out.send(("end", None))
    except ValueError as e:  # a bad row: the message names its line and field
        out.send(("bad", str(e)))
    except BaseException as e:  # reported to the parent, which raises it
        out.send(("fail", f"{type(e).__name__}: {e}"))
    finally:
        out.close()


def _from_child(rows: CsvRows, canon: Callable[[str], str], kw: dict[str, Any]) -> Iterator[Batch]:
    ctx = multiprocessing.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    with contextlib.suppress(OSError, AttributeError):  # the child may run ahead by a few batches, not one
        fcntl.fcntl(send.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    proc = ctx.Process(target=_child, args=(send, rows, canon, kw), name="sidecar-import-check", daemon=True)
    proc.start()
    send.close()
    ended = False
    try:
        while True:
            try:
                kind, payload = recv.recv()
            except EOFError:
                proc.join(5)
                raise RuntimeError(
                    f"the import's checking process ended unexpectedly (exit status {proc.exitcode})"
                ) from None
            if kind == "rows":
                yield payload
            elif kind == "end":
                ended = True
                return
            elif kind == "bad":
                raise ValueError(payload)
            else:
                raise RuntimeError(f"checking the import failed: {payload}")
    finally:
        recv.close()
        proc.join(5 if ended else 0)
        if proc.is_alive() and proc.pid is not None:  # stopped early (a bad row, a database error): ours, by PID
            os.kill(proc.pid, signal.SIGKILL)
        proc.join()
