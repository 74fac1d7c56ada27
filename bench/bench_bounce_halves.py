"""Bounce parser accuracy on two fixed halves of each labelled corpus (prints figures).

    .venv/bin/python bench/bench_bounce_halves.py [--half 1|2] [--misses]

Half 1 of each corpus is where rules are looked at; half 2 is measured, not read (a large
gap between the halves means the rules fit the samples, not the MTAs). ``--misses`` lists
the coarse-category and hard/soft misses, for half 1 only unless ``--half 2`` is asked for.
The split and the scoring are in tests/harness/bounce_halves.py (the golden tests use them).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sidecar.bounce.parse import PARSER_VERSION, parse_bytes  # noqa: E402
from tests.harness.bounce_halves import CORPORA, score_half  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--half", type=int, choices=(1, 2), action="append")
    ap.add_argument("--misses", action="store_true")
    args = ap.parse_args()
    halves = args.half or [1, 2]
    print(f"parser {PARSER_VERSION}")
    for corpus in CORPORA:
        for which in [*halves, None] if len(halves) == 2 else halves:
            s = score_half(parse_bytes, corpus, which)
            print(f"{corpus:7s} half {which or 'both'}: {s.line()}")
            if args.misses and which is not None and (which == 1 or args.half == [2]):
                for miss in s.misses:
                    print(f"    {miss}")


if __name__ == "__main__":
    main()
