#!/usr/bin/env python3
"""CLI import of suppressions from CSV into SQLite and PostgreSQL: seconds, peak RSS, completeness.

Runs ``sidecar suppressions import FILE.csv --db URL --json --no-progress`` on a CSV of ``--rows``
rows (``address,tenant,reason,expires_at``, the addresses bench/policy_load.py asks about) into
an empty database, timed from spawn to exit; the peak RSS is the child's ``ru_maxrss`` (wait4).
Then checks that every row is an active suppression and that the change feed holds every
address (or, for a bulk import, a reload marker newer than them). With ``--compare DIR`` the
same import runs first from DIR (e.g. ``git archive OLD | tar -x -C DIR``, via PYTHONPATH),
then from this tree, in turn, so before/after come from one run. Each line also gives the
command's CPU, the PostgreSQL server's CPU (on a shared machine the wall time measures the queue
for a core as much as the work) and this tree's phases from its log (checked, written, indexes
rebuilt).

    .venv/bin/python bench/bench_import.py [--rows 1000000] [--backend sqlite,postgresql] [--compare DIR]

PostgreSQL: a private, durable server on 127.0.0.1 (bench/scale_env.py; ``--fast-pg`` = no fsync).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))
from policy_bench import suppression_csv  # noqa: E402 - sibling bench modules

SIDECAR = str(ROOT / ".venv" / "bin" / "sidecar")
TARGET_S = {"sqlite": 15.0, "postgresql": 10.0}


def uptime() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def pg_cpu_s(pg: object | None) -> float:
    """CPU seconds of the PostgreSQL server's processes so far: the live ones, and the ended backends
    the postmaster reaped (its children's time)."""
    if pg is None:
        return 0.0
    from scale_env import pg_pids

    ticks = 0
    for i, pid in enumerate(pg_pids(pg)):  # type: ignore[arg-type]
        try:
            v = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        ticks += int(v[11]) + int(v[12]) + (int(v[13]) + int(v[14]) if i == 0 else 0)
    return ticks / os.sysconf("SC_CLK_TCK")


def run_import(csv_path: Path, url: str, source: str | None, pg: object | None = None) -> dict:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if source:
        env["PYTHONPATH"] = source
    load0 = os.getloadavg()[0]
    server0 = pg_cpu_s(pg)
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [
            SIDECAR,
            # this tree logs its phases (older ones have neither the lines nor, before 1d933b8, --log-format)
            *([] if source else ["--log-level", "info", "--log-format", "json"]),
            "suppressions",
            "import",
            str(csv_path),
            "--db",
            url,
            "--json",
            "--no-progress",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - t0
    server = pg_cpu_s(pg) - server0
    proc.returncode = os.waitstatus_to_exitcode(status)
    out, err = proc.stdout.read(), proc.stderr.read()  # type: ignore[union-attr]
    if proc.returncode != 0:
        raise RuntimeError(f"import failed ({proc.returncode}): {out[-2000:]!r} {err[-2000:]!r}")
    # this tree's phases, from its log lines ("import: 1000000 rows checked in 3.1 s", ...)
    phases = re.findall(
        r"import: (?:\d+ rows )?(.+? in [\d.]+ s(?: \(CPU [\d.]+ s[^)]*\))?)", err.decode(errors="replace")
    )
    return {
        "phases": phases,
        "wall_s": round(wall, 2),
        "command_s": json.loads(out.strip().splitlines()[-1])["seconds"],
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        **({"server_cpu_s": round(server, 2)} if pg is not None else {}),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "load": f"{load0:.2f} -> {os.getloadavg()[0]:.2f}",
    }


def counts_sqlite(db: Path) -> tuple[int, int]:
    with sqlite3.connect(db) as c:
        sup = c.execute("SELECT count(*) FROM suppressions WHERE active").fetchone()[0]
        feed = c.execute("SELECT count(DISTINCT address) FROM changes WHERE kind = 'suppression'").fetchone()[0]
        reload = c.execute("SELECT count(*) FROM changes WHERE kind = 'reload'").fetchone()[0]
    return sup, feed if not reload else sup


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--backend", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    ap.add_argument(
        "--compare",
        metavar="DIR",
        action="append",
        default=[],
        help="also run the sidecar package from DIR (before), in turn; repeat for several (before, before2, ...)",
    )
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--fast-pg", action="store_true", help="PostgreSQL without fsync (the test settings)")
    ap.add_argument("--cache-dir", default="/tmp/sidecar-bench-cache", help="keeps the generated CSV")
    args = ap.parse_args()
    if not 0 < args.rows <= 5_000_000 or not 0 < args.rounds <= 10:
        ap.error("bounded runs only: --rows <= 5e6, --rounds <= 10")
    backends = [b for b in args.backend.split(",") if b]
    if set(backends) - set(TARGET_S):
        ap.error("--backend: sqlite and/or postgresql")
    for d in args.compare:
        if not (Path(d) / "sidecar" / "__init__.py").exists():
            ap.error(f"--compare {d}: no sidecar package there")
    cache = Path(args.cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    csv_path = suppression_csv(cache, args.rows)
    print(
        f"# {platform.node()} {platform.machine()} {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"sqlite {sqlite3.sqlite_version}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{args.rows:,} rows; load average at start {uptime()}",
        flush=True,
    )
    trees: list[tuple[str, str | None]] = [
        (f"before{i + 1 if i else ''}", str(Path(d).resolve())) for i, d in enumerate(args.compare)
    ]
    trees.append(("after", None))
    work = Path(tempfile.mkdtemp(prefix="bench-import-"))
    pg = None
    results: dict[tuple[str, str], list[dict]] = {}
    try:
        if "postgresql" in backends:
            from scale_env import db_counts, pg_remove, pg_start

            pg = pg_start(args.fast_pg)
        n = 0
        for _ in range(args.rounds):
            for backend in backends:
                for label, source in trees:
                    n += 1
                    if backend == "sqlite":
                        db = work / f"import-{n}.db"
                        url = f"sqlite:///{db}"
                    else:
                        assert pg is not None
                        url = pg.create_database(f"import{n}")
                    r = run_import(csv_path, url, source, pg if backend == "postgresql" else None)
                    if backend == "sqlite":
                        r["suppressions"], r["feed"] = counts_sqlite(db)
                        for p in work.glob(f"import-{n}.db*"):
                            p.unlink()
                    else:
                        r["suppressions"], r["feed"] = db_counts(pg, f"import{n}")  # type: ignore[arg-type]
                    r["complete"] = r["suppressions"] == args.rows and r["feed"] >= args.rows
                    results.setdefault((backend, label), []).append(r)
                    print(f"{backend:<10} {label:<7} {json.dumps(r)}", flush=True)
    finally:
        if pg is not None:
            pg_remove(pg)
        shutil.rmtree(work, ignore_errors=True)
    for backend in backends:
        best = {label: min(results[(backend, label)], key=lambda r: r["wall_s"]) for label, _ in trees}
        after = best["after"]
        line = (
            f"{backend}: {after['wall_s']} s, peak RSS {after['peak_rss_mb']} MB, complete {after['complete']}; "
            f"target <= {TARGET_S[backend]:.0f} s {'met' if after['wall_s'] <= TARGET_S[backend] else 'NOT met'}"
        )
        for label, before in best.items():
            if label != "after":
                line += f"; {label} {before['wall_s']} s, {before['peak_rss_mb']} MB"
                line += f"; after/{label} {after['wall_s'] / before['wall_s']:.2f}x"
        print(line)
    print(f"load average at end {uptime()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
