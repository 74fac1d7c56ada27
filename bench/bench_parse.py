"""Benchmark: in-process bounce parse + categorise throughput (prints figures, not a test).

    .venv/bin/python bench/bench_parse.py [FOLDER] [--rounds N]
    .venv/bin/python bench/bench_parse.py --against /path/to/other/checkout [--pairs 3]

Loads every .eml in FOLDER (default tests/data/bounces/corpus) into memory, then runs
``parse_message`` over all of them ``--rounds`` times and prints messages/s for the best and
the median round, by the wall clock and by the process's own CPU time (``cpu``: what the
parser costs, less sensitive to other work on a shared host than the wall clock). On a busy
host, compare two parser versions with ``--against``: each pair runs this checkout's parser and
the other checkout's (e.g. ``git worktree`` or ``git archive`` of an older commit) one after the
other in fresh processes, so both see the same load; the summary gives the ratio of the sums.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(folder: str, rounds: int) -> None:
    from sidecar.bounce.parse import PARSER_VERSION, parse_message

    messages = [p.read_bytes() for p in sorted(Path(folder).glob("*.eml"))]
    if not messages:
        sys.exit(f"no .eml files in {folder}")
    for raw in messages:  # warm-up: lazy imports, regex compilation
        parse_message(raw)
    rates, cpu_rates = [], []
    for _ in range(rounds):
        t0, c0 = time.perf_counter(), time.process_time()
        for raw in messages:
            parse_message(raw)
        rates.append(len(messages) / (time.perf_counter() - t0))
        cpu_rates.append(len(messages) / max(time.process_time() - c0, 1e-9))
    size = sum(len(m) for m in messages) / 1024
    print(f"parser {PARSER_VERSION}: {len(messages)} messages ({size:.0f} KiB) x {rounds} rounds")
    print(f"  best   {max(rates):8.0f} messages/s")
    print(f"  median {statistics.median(rates):8.0f} messages/s")
    print(f"  cpu    {max(cpu_rates):8.0f} messages per CPU second (best round)")


def _figure(out: list[str], name: str) -> float:
    return float(next((line.split()[1] for line in out if line.strip().startswith(name)), "nan"))


def _compare(folder: str, rounds: int, other: Path, pairs: int) -> None:
    sums = {"this": [0.0, 0.0], "against": [0.0, 0.0]}
    for i in range(pairs):
        for label, root in (("this", ROOT), ("against", other)):
            cmd = [sys.executable, __file__, folder, "--rounds", str(rounds), "--root", str(root)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()
            version = out[0].split(":")[0] if out else "?"
            best, cpu = _figure(out, "best"), _figure(out, "cpu")
            sums[label][0] += best
            sums[label][1] += cpu
            print(f"pair {i + 1} {label:8} {version:16} best {best:6.0f} messages/s, cpu {cpu:6.0f} messages/CPU-s")
    (wall, cpu), (wall_o, cpu_o) = sums["this"], sums["against"]
    print(f"this / against, sums over the pairs: wall {wall / wall_o:.2f}x, cpu {cpu / cpu_o:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", nargs="?", default=str(ROOT / "tests/data/bounces/corpus"))
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--against", help="another checkout to measure alternately with this one")
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--root", help=argparse.SUPPRESS)  # which checkout's parser to import
    args = ap.parse_args()
    if args.against:
        _compare(args.folder, args.rounds, Path(args.against).resolve(), args.pairs)
        return
    sys.path.insert(0, str(Path(args.root).resolve() if args.root else ROOT))
    _run(args.folder, args.rounds)


if __name__ == "__main__":
    main()
