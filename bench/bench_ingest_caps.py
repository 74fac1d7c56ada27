#!/usr/bin/env python3
"""How long one message naming many addresses holds the SQLite write lock.

Records one message whose (stubbed) parse names ``--addresses`` hard-bouncing recipients, all
in the record of recipients (so every one is corroborated), through the real Recorder on a
SQLite file. Prints the time inside the recording transaction (the write lock) and the whole
``record()`` call, with the default per-message caps and, for comparison, with caps so high
they never apply (the behaviour before ``ingest.max_failed_recipients`` /
``max_suppressions_per_message``).

    .venv/bin/python bench/bench_ingest_caps.py [--addresses 100000] [--uncapped 2000]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sidecar.bounce.envelope import Envelope  # noqa: E402
from sidecar.bounce.parse.results import Category, FailedRecipient, Kind, ParsedMessage  # noqa: E402
from sidecar.bounce.record import Recorder  # noqa: E402
from sidecar.config import load_config  # noqa: E402
from sidecar.recipients import InMemoryRecipients  # noqa: E402
from sidecar.store.db import make_engine, upgrade  # noqa: E402


def run(n: int, capped: bool, workdir: Path) -> tuple[float, float, int, int]:
    now = time.time()
    addresses = [f"m{i}@example.net" for i in range(n)]
    record = InMemoryRecipients()
    for a in addresses:
        record.add("acme", a, now)
    parsed = ParsedMessage(
        Kind.BOUNCE,
        [
            FailedRecipient(a, Category.INVALID_RECIPIENT, "userunknown", True, "5.1.1", "failed", None, None)
            for a in addresses
        ],
    )
    db = workdir / f"caps-{n}-{capped}.db"
    cfg = load_config(None, {"database.url": f"sqlite:///{db}"})
    if not capped:
        cfg = dataclasses.replace(
            cfg, ingest=dataclasses.replace(cfg.ingest, max_failed_recipients=10**9, max_suppressions_per_message=10**9)
        )
    engine = make_engine(cfg.database.url)
    upgrade(engine)
    rec = Recorder(cfg, engine, lambda raw: parsed, recipients=record)
    held = [0.0]
    apply = rec.apply

    def timed_apply(*a, **kw):  # the inserts: inside engine.begin(), after the raw message row
        t = time.perf_counter()
        try:
            return apply(*a, **kw)
        finally:
            held[0] = time.perf_counter() - t

    rec.apply = timed_apply  # type: ignore[method-assign]
    t0 = time.perf_counter()
    out = rec.record(b"Subject: many\n\nx", Envelope(), now=now)
    total = time.perf_counter() - t0
    engine.dispose()
    return held[0], total, out.recipients, out.suppressions


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--addresses", type=int, default=100_000)
    ap.add_argument("--uncapped", type=int, default=2_000, help="addresses for the uncapped comparison (0: skip)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        for n, capped in ((args.addresses, True), (args.uncapped, False)):
            if n <= 0:
                continue
            held, total, recipients, suppressions = run(n, capped, Path(d))
            label = "default caps" if capped else "no caps     "
            print(
                f"{label} {n:>7} addresses: events {recipients:>6}, suppressions {suppressions:>6}; "
                f"write transaction (inserts) {held:7.3f} s, whole record() {total:7.3f} s"
            )


if __name__ == "__main__":
    main()
