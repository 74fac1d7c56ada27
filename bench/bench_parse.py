"""Benchmark: in-process bounce parse + categorise throughput (prints figures, not a test).

    .venv/bin/python bench/bench_parse.py [FOLDER] [--rounds N]

Loads every .eml in FOLDER (default tests/data/bounces/corpus) into memory, then runs
``parse_message`` over all of them ``--rounds`` times and prints messages/s for the best and
the median round.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sidecar.bounce.parse import PARSER_VERSION, parse_message  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", nargs="?", default=str(ROOT / "tests/data/bounces/corpus"))
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    messages = [p.read_bytes() for p in sorted(Path(args.folder).glob("*.eml"))]
    if not messages:
        sys.exit(f"no .eml files in {args.folder}")
    for raw in messages:  # warm-up: lazy imports, regex compilation
        parse_message(raw)
    rates = []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        for raw in messages:
            parse_message(raw)
        rates.append(len(messages) / (time.perf_counter() - t0))
    size = sum(len(m) for m in messages) / 1024
    print(f"parser {PARSER_VERSION}: {len(messages)} messages ({size:.0f} KiB) x {args.rounds} rounds")
    print(f"  best   {max(rates):8.0f} messages/s")
    print(f"  median {statistics.median(rates):8.0f} messages/s")


if __name__ == "__main__":
    main()
