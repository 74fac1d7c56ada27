"""Rate-limit refusals aggregated per key and minute, for the events table (and webhooks)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy import Engine, insert

from sidecar.store.models import Event


class RefusalLog:
    """Counts refusals in memory; completed minutes are written as one event per key."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str, int]] = Counter()

    def __call__(self, rule: str, key: str, now: float) -> None:
        self.counts[(rule, key, int(now // 60))] += 1

    def take_completed(self, now: float) -> list[dict[str, Any]]:
        minute = int(now // 60)
        done = [k for k in self.counts if k[2] < minute]
        rows = []
        for k in done:
            rule, key, m = k
            n = self.counts.pop(k)
            rows.append(
                {
                    "kind": "ratelimit",
                    "created_at": m * 60.0,
                    "address": key.partition(":")[2][:320],
                    "tenant": "",
                    "reason": rule,
                    "category": "ratelimit",
                    "decision": "deferred",
                    "diagnostic": f"{n} request(s) refused by rate limit {rule} for {key} in this minute",
                }
            )
        return rows

    def put_back(self, rows: list[dict[str, Any]]) -> None:
        for r in rows:
            n = int(r["diagnostic"].split(" ", 1)[0])
            self.counts[(r["reason"], f"{r['reason']}:{r['address']}", int(r["created_at"] // 60))] += n


def write_refusals(engine: Engine, rows: list[dict[str, Any]]) -> None:
    with engine.begin() as conn:
        conn.execute(insert(Event), rows)
