"""The record of recipients: memory, speed and the measured false-positive rate.

Prints, for one day of ``--per-day`` distinct (tenant, recipient) pairs:
- the cost of ``RecipientRecorder.add`` (the policy server's per-RCPT work on the reactor);
- the flush's hashing of a day's pairs into the filter (done in the thread pool);
- the filter's size and the process RSS before and after;
- the measured false-positive rate (never-recorded pairs that test positive) against the
  configured one, for one test and for a lookup over ``--tenants`` tenants and ``--days`` days;
- the ingester's side: a SQLite store holding ``--days`` days x ``--nodes`` nodes, the first
  ``tenants_for`` of a fresh lookup (what a one-shot ``sidecar ingest`` pays) and a cached one.

    .venv/bin/python bench/bench_recipients.py                       # 1,000,000 a day at 1e-6
    .venv/bin/python bench/bench_recipients.py --rate 1e-4 --tests 2000000
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from sidecar.recipient_filters import DAY, DayFilters, RecipientRecorder, day_of, first_day
from sidecar.store import recipient_days
from sidecar.store.db import make_engine, upgrade

NOW = 1_795_000_000.0


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--per-day", type=int, default=1_000_000, help="distinct pairs recorded in the day")
    p.add_argument("--rate", type=float, default=1e-6, help="recipients.false_positive_rate")
    p.add_argument("--tenants", type=int, default=10, help="tenants the pairs are spread over")
    p.add_argument("--tests", type=int, default=1_000_000, help="never-recorded pairs tested")
    p.add_argument("--days", type=int, default=15, help="days in the lookup window (14 d retention: 15)")
    p.add_argument("--nodes", type=int, default=2, help="relay nodes writing filters")
    p.add_argument("--db", help="SQLite file for the lookup part (default: a temporary one)")
    a = p.parse_args()

    rss0 = rss_mb()
    rec = RecipientRecorder(a.per_day, a.rate)
    tenants = [f"tenant{i}" for i in range(a.tenants)]
    pairs_in = [(tenants[i % a.tenants], f"rcpt{i}@example{i % 997}.test") for i in range(a.per_day)]
    rss_pairs = rss_mb()
    add = rec.add
    t0 = time.perf_counter()
    for tenant, rcpt in pairs_in:
        add(tenant, rcpt, NOW)
    t_add = time.perf_counter() - t0
    del pairs_in
    pending = rec.take()
    rss_pending = rss_mb()
    t0 = time.perf_counter()
    for day, pairs in pending.items():
        rec.apply(day, pairs)
    t_apply = time.perf_counter() - t0
    del pending
    rss1 = rss_mb()
    rows = rec.dirty()
    size = len(rows[0][1])
    print(f"{a.per_day:,} pairs over {a.tenants} tenants, false_positive_rate {a.rate:g}")
    print(f"  add (reactor, per RCPT):      {t_add / a.per_day * 1e9:,.0f} ns each ({t_add:.2f} s in all)")
    print(f"  flush hashing (thread pool):  {t_apply / a.per_day * 1e9:,.0f} ns a pair ({t_apply:.2f} s for the day)")
    print(
        f"  filter: {size:,} bytes ({size / 2**20:.2f} MiB, {size * 8 / a.per_day:.1f} bits a pair), "
        f"estimated pairs {rows[0][2]:,.0f}"
    )
    print(
        f"  RSS: {rss0:.1f} MB at start, {rss_pairs:.1f} MB with the bench's pairs, "
        f"{rss_pending:.1f} MB with the pending set of the whole day, "
        f"{rss1:.1f} MB after hashing it in (the pending set is normally a few seconds' worth)"
    )

    view = DayFilters()
    day = day_of(NOW)
    view.put_day(day, [("n", 1.0, rows[0][1])])
    view.keep([day], {day: frozenset(tenants)})
    bloom = view.blooms[day][0]
    from sidecar.recipient_filters import pair_hash

    t0 = time.perf_counter()
    fp = sum(pair_hash(tenants[0], f"never{i}@example.test") in bloom for i in range(a.tests))
    t_test = time.perf_counter() - t0
    per_lookup = 1 - (1 - a.rate) ** (a.tenants * a.days)
    print(
        f"  false positives: {fp} of {a.tests:,} never-recorded pairs = {fp / a.tests:.2e} "
        f"(configured {a.rate:g}); {t_test / a.tests * 1e9:,.0f} ns a test"
    )
    print(
        f"  a lookup tests {a.tenants} tenants x {a.days} days: a never-sent address is corroborated with "
        f"probability <= {per_lookup:.2e} at a full day every day"
    )

    # The ingester's side: a store with the window's filters of every node.
    with tempfile.TemporaryDirectory() as tmp:
        path = a.db or os.path.join(tmp, "record.db")
        engine = make_engine(f"sqlite:///{path}")
        upgrade(engine)
        from sqlalchemy import insert

        from sidecar.store.models import RecipientFilter, RecipientTenant

        lo = first_day(NOW, (a.days - 1) * DAY)
        with engine.begin() as conn:
            for d in range(lo, day + 1):
                for n in range(a.nodes):
                    conn.execute(
                        insert(RecipientFilter).values(
                            day=d, node=f"relay-{n}", bits=rows[0][1], items=rows[0][2], updated_at=NOW
                        )
                    )
                conn.execute(insert(RecipientTenant), [{"day": d, "tenant": t} for t in tenants])
        engine.dispose()
        total = a.days * a.nodes * size
        for attempt in range(3):
            engine = make_engine(f"sqlite:///{path}")
            rss_a = rss_mb()
            lookup = recipient_days.StoredRecipients(engine, (a.days - 1) * DAY)
            t0 = time.perf_counter()
            got = lookup.tenants_for("rcpt7@example7.test", NOW)
            t_first = time.perf_counter() - t0
            rss_b = rss_mb()
            t0 = time.perf_counter()
            for _ in range(100):
                lookup.tenants_for("rcpt7@example7.test", NOW)
            t_cached = (time.perf_counter() - t0) / 100
            assert got == {tenants[7 % a.tenants]}, got
            print(
                f"  lookup over {a.days} days x {a.nodes} nodes ({total / 2**20:.0f} MiB stored): first "
                f"tenants_for {t_first * 1000:.0f} ms (load and OR the filters), then {t_cached * 1000:.2f} ms "
                f"(stamps read, filters cached); +{rss_b - rss_a:.0f} MB RSS" + (" [again]" if attempt else "")
            )
            engine.dispose()
            del lookup


if __name__ == "__main__":
    main()
