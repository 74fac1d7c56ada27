"""The scale benchmark's surroundings: a durable private PostgreSQL, and whose CPU a step used.

PostgreSQL comes from tests/harness/services.py (own data directory, loopback port), restarted here
with PostgreSQL's own durable defaults; CpuWatch tells our processes' CPU from the rest of
the machine's, so that a step disturbed by other load can be told and redone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]
from policy_bench import cpu_ticks  # noqa: E402 - sibling bench module

from tests.harness.services import PostgresServer  # noqa: E402


class DurablePostgres(PostgresServer):
    """tests/harness/services.py's server with PostgreSQL's own (durable) defaults for fsync and commits."""

    SETTINGS = ""


def pg_start(fast: bool) -> PostgresServer:
    """fast: the test settings (fsync, synchronous_commit and full_page_writes off)."""
    return PostgresServer().start() if fast else DurablePostgres().start()


def pg_settings(pg: PostgresServer) -> dict[str, str]:
    import psycopg

    with psycopg.connect(f"host=127.0.0.1 port={pg.port} user=postgres dbname=postgres") as conn:
        rows = conn.execute(
            "SELECT name, setting FROM pg_settings WHERE name IN "
            "('fsync', 'synchronous_commit', 'full_page_writes', 'shared_buffers', "
            "'server_version')"
        ).fetchall()
    return dict(rows)


def pg_pids(pg: PostgresServer) -> list[int]:
    """The postmaster and its children (backends, writers), for CPU accounting and clean-up."""
    try:
        top = int((pg.dir / "data" / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return []
    pids = [top]
    for d in os.listdir("/proc"):
        if d.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError), open(f"/proc/{d}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) == top:
                    pids.append(int(d))
    return pids


def pg_remove(pg: PostgresServer) -> None:
    """pg_ctl stop; SIGKILL the postmaster by PID if it is still ours and alive; remove its files."""
    pids = pg_pids(pg)
    pg.stop("immediate")
    for pid in pids[:1]:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/cmdline", "rb") as f:
            if str(pg.dir).encode() in f.read():
                os.kill(pid, signal.SIGKILL)
    shutil.rmtree(pg.dir, ignore_errors=True)


def db_counts(pg: PostgresServer, db: str) -> tuple[int, int]:
    import psycopg

    with psycopg.connect(f"host=127.0.0.1 port={pg.port} user=postgres dbname={db}") as conn:
        sup = conn.execute("SELECT count(*) FROM suppressions WHERE active").fetchone()[0]
        feed = conn.execute("SELECT count(DISTINCT address) FROM changes WHERE kind = 'suppression'").fetchone()[0]
    return sup, feed


class CpuWatch:
    """CPU time, in cores, of the processes we run (listed PIDs, reaped children, this one) and of the rest.

    Started before a step and read after it: ``other`` is what any other process used meanwhile,
    the sign of a disturbed measurement on a shared machine.
    """

    hz = os.sysconf("SC_CLK_TCK")

    def __init__(self, pids: list[int], pg: PostgresServer | None = None) -> None:
        self.pg = pg  # its backends started during the window are ours too
        self.pids = [os.getpid(), *pids]
        self.every0 = self._every()
        self.t0, self.all0, self.pid0, self.ch0 = time.monotonic(), cpu_ticks(), self._ticks(), os.times()

    @staticmethod
    def _every() -> dict[int, tuple[str, int]]:
        """(name, CPU ticks) of every process: to name what disturbed a measurement."""
        out = {}
        for d in os.listdir("/proc"):
            if d.isdigit():
                with contextlib.suppress(OSError, IndexError, ValueError), open(f"/proc/{d}/stat") as f:
                    head, _, rest = f.read().rpartition(")")
                    v = rest.split()
                    out[int(d)] = (head.partition("(")[2], int(v[11]) + int(v[12]))
        return out

    def _ticks(self) -> dict[int, int]:
        out = {}
        for pid in self.pids:
            with contextlib.suppress(OSError, IndexError):
                out[pid] = cpu_ticks(pid)
        with contextlib.suppress(OSError, IndexError, ValueError):
            if self.pg:  # backends that ended: the postmaster reaps them into its children's time
                top = pg_pids(self.pg)[0]
                with open(f"/proc/{top}/stat") as f:
                    v = f.read().rsplit(")", 1)[1].split()
                out[-top] = int(v[13]) + int(v[14])
        return out

    def stop(self, late: list[int] | None = None, wall: float | None = None) -> dict[str, Any]:
        """``late``: our processes started after this watch (all their time falls in the window);
        ``wall``: the step's duration if it ended before this call."""
        wall = wall or time.monotonic() - self.t0
        ch1, pid1, all1 = os.times(), self._ticks(), cpu_ticks()
        used = {pid: pid1[pid] - self.pid0[pid] for pid in pid1 if pid in self.pid0}
        for pid in [*(late or []), *(pg_pids(self.pg) if self.pg else [])]:
            if pid not in self.pid0:  # e.g. a backend born during the window
                with contextlib.suppress(OSError, IndexError):
                    used[pid] = cpu_ticks(pid)
        children = (ch1.children_user - self.ch0.children_user) + (ch1.children_system - self.ch0.children_system)
        other = (all1 - self.all0 - sum(used.values())) / self.hz - children
        top = []
        if other > 0.1 * wall:
            every1 = self._every()
            diff = [
                (t - self.every0.get(pid, ("", 0))[1], f"{name}[{pid}]")
                for pid, (name, t) in every1.items()
                if pid not in used
            ]
            top = [f"{who} {t / self.hz / wall:.0%}" for t, who in sorted(diff, reverse=True)[:4] if t > 0]
        return {
            "wall_s": round(wall, 2),
            "children_cpu": round(children / wall, 2),
            "other_top": top,
            "first_pid_cpu": round(used.get(self.pids[1], 0) / self.hz / wall, 2) if len(self.pids) > 1 else 0,
            "other_cpu": round(max(0.0, other) / wall, 2),
            "loadavg": round(os.getloadavg()[0], 2),
        }
