"""Wrong suppressions through ``sidecar import``: a labelled corpus into a fresh SQLite database.

What is counted: tests/harness/corpus_import.py (wrong suppressions, target 0; the share of
labelled hard failures suppressed, target >= 90%).

    .venv/bin/python bench/bench_wrong_suppressions.py --corpus tests/data/bounces/corpus
    .venv/bin/python bench/bench_wrong_suppressions.py --corpus DIR --corpus DIR2 --list

``--require-record`` imports as the pipe decides (corroboration by VERP or the record of
recipients; with an empty record nothing suppresses). ``--list`` prints each wrong
suppression and each missed hard failure. ``--sidecar`` runs another build's command.
"""

from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.harness.corpus_import import run  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", action="append", required=True, help="labelled corpus folder (repeatable)")
    ap.add_argument("--sidecar", default=os.path.join(ROOT, ".venv", "bin", "sidecar"), help="the sidecar command")
    ap.add_argument("--require-record", action="store_true", help="import with --require-record")
    ap.add_argument("--list", action="store_true", help="list each wrong suppression and missed hard failure")
    args = ap.parse_args(argv)
    for corpus in args.corpus:
        try:
            out = run(os.path.abspath(corpus), args.sidecar, args.require_record)
        except (OSError, RuntimeError, ValueError) as e:
            print(f"bench_wrong_suppressions: {e}", file=sys.stderr)
            return 1
        if args.list:
            for f, a, d in out["wrong"]:
                print(f"  wrong: {f}: {a} ({d})")
            for f, a in out["missed"]:
                print(f"  missed hard failure: {f}: {a}")
        print(f"{out['corpus']} ({out['messages']} messages)")
        print(f"  {out['import']}")
        print(f"  wrong suppressions:       {out['wrong_suppressions']}")
        print(f"  (right, under the Original-Recipient of a labelled failed recipient: {out['as_original']})")
        print(
            f"  hard failures suppressed: {out['hard_suppressed']} of {out['hard_failures']}"
            f" ({out['hard_suppressed_pct']}%)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
