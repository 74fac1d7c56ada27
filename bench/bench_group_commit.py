#!/usr/bin/env python3
"""The ingest service's recording cost per message: one transaction per message (``Recorder.record``)
against group commit (``sidecar.bounce.group.record_group``) with groups of several messages.

In one process, no sockets: the bench's bounce samples (each made unique) recorded into a fresh
SQLite file (or ``--db-url``) per case, cases alternating over ``--rounds``. Prints CPU and
wall time per message and each case's ratio against one-by-one in the same round.

    .venv/bin/python bench/bench_group_commit.py [--messages 300] [--groups 1,4,16] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ingest import samples

from sidecar.bounce.envelope import Envelope
from sidecar.bounce.group import record_group
from sidecar.bounce.record import open_recorder
from sidecar.config import load_config

ENV = Envelope("MAILER-DAEMON", "bounces@bounce.example", "BENCH")


def one_case(url: str, msgs: list[bytes], group: int) -> tuple[float, float]:
    """(CPU ms, wall ms) per message; group 0 = Recorder.record one by one."""
    rec = open_recorder(load_config(None, {"database.url": url}))
    try:
        rec.record(b"X-Warm: 1\n" + msgs[0], ENV)  # connections, statement caches
        c0, w0 = time.process_time(), time.perf_counter()
        if group == 0:
            for raw in msgs:
                rec.record(raw, ENV)
        else:
            for i in range(0, len(msgs), group):
                out = record_group(rec, [(raw, ENV) for raw in msgs[i : i + group]])
                bad = [o for o in out if isinstance(o, BaseException)]
                if bad:
                    sys.exit(f"group of {group}: {bad[0]!r}")
        c1, w1 = time.process_time(), time.perf_counter()
    finally:
        rec.engine.dispose()
    return (c1 - c0) * 1000 / len(msgs), (w1 - w0) * 1000 / len(msgs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=300)
    ap.add_argument("--groups", default="1,4,16", help="group sizes to compare with one by one (comma-separated)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--db-url", help="a database to record into instead of a fresh SQLite file per case (emptied)")
    args = ap.parse_args()
    sizes = [0] + [int(g) for g in args.groups.split(",") if g]
    print(f"# {platform.node()} {os.cpu_count()} CPUs, Python {platform.python_version()}, {time.strftime('%F %H:%M')}")
    work = Path(tempfile.mkdtemp(prefix="bench-group-"))
    try:
        for r in range(args.rounds):
            base = None
            for g in sizes:
                msgs = [f"X-Round: {r}-{g}\n".encode() + m for m in samples(args.messages)]
                url = args.db_url or f"sqlite:///{work / f'r{r}-g{g}.db'}"
                cpu, wall = one_case(url, msgs, g)
                base = base or cpu
                name = "one by one (record)" if g == 0 else f"groups of {g}"
                print(
                    f"round {r + 1}  {name:<20} CPU {cpu:5.2f} ms/message  wall {wall:5.2f} ms/message  "
                    f"CPU ratio {cpu / base:.2f}  load average {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
