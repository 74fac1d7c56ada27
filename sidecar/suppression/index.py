"""In-memory suppression index: what the policy hot path reads.

One dict per tenant ("" = global) from match key to a shared, interned entry. At a
million addresses the dicts and the key strings dominate memory; entries with the
same reason, day and expiry share one object. Entries that expire are also kept in a
heap by expiry, so pruning touches only what has expired, never the whole index.
"""

from __future__ import annotations

import heapq
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Entry:
    reason: str
    date: str  # YYYY-MM-DD of creation, for the reply text
    expires_at: float | None


class SuppressionIndex:
    def __init__(self, case_sensitive_local: bool = False, allowlist: tuple[str, ...] = ()) -> None:
        self.case_sensitive_local = case_sensitive_local
        self._by_tenant: dict[str, dict[str, Entry]] = {"": {}}
        self.tenant_scoped = False  # True once any suppression for a tenant (not global) was added
        self._entries: dict[tuple[str, str, float | None], Entry] = {}
        self._days: dict[int, str] = {}
        self._reasons: dict[str, str] = {}
        # (expires_at, tenant, key) for every put with an expiry; stale ones are skipped when popped
        self._expiring: list[tuple[float, str, str]] = []
        self._allow_addresses = {a for a in allowlist if not a.startswith("@")}
        self._allow_domains = {a[1:] for a in allowlist if a.startswith("@")}

    def key(self, address: str) -> str:
        if not self.case_sensitive_local:
            return address.lower()
        local, _, domain = address.rpartition("@")
        return f"{local}@{domain.lower()}"

    def _entry(self, reason: str, created_at: float, expires_at: float | None) -> Entry:
        day = int(created_at // 86400)
        date = self._days.get(day)
        if date is None:
            date = self._days[day] = time.strftime("%Y-%m-%d", time.gmtime(day * 86400))
        k = (reason, date, expires_at)
        e = self._entries.get(k)
        if e is None:
            r = self._reasons.get(reason)
            if r is None:
                r = self._reasons[reason] = sys.intern(reason)
            e = self._entries[k] = Entry(r, date, expires_at)
        return e

    def put(self, address: str, tenant: str, reason: str, created_at: float, expires_at: float | None) -> None:
        d = self._by_tenant.get(tenant)
        if d is None:
            d = self._by_tenant[tenant] = {}
            self.tenant_scoped = True
        k = self.key(address)
        e = d[k] = self._entry(reason, created_at, expires_at)
        if e.expires_at is not None:
            heapq.heappush(self._expiring, (e.expires_at, tenant, k))

    def put_many(self, rows: Iterable[tuple[str, str, str, float, float | None]]) -> int:
        """``put`` for each (address, tenant, reason, created_at, expires_at); returns how many."""
        n = 0
        entry = self._entry
        key = str.lower if not self.case_sensitive_local else self.key
        by_tenant = self._by_tenant
        last: tuple[str, float, float | None] | None = None
        e = Entry("", "", None)
        day_end = -1.0
        for address, tenant, reason, created, expires in rows:
            d = by_tenant.get(tenant)
            if d is None:
                d = by_tenant[tenant] = {}
                self.tenant_scoped = True
            # rows mostly repeat the previous one's reason and expiry within a day: skip the lookups
            if (
                last is None
                or created >= day_end
                or created < day_end - 86400
                or last[0] != reason
                or last[2] != expires
            ):
                e = entry(reason, created, expires)
                last = (reason, created, expires)
                day_end = (created // 86400 + 1) * 86400
            k = key(address)
            d[k] = e
            if e.expires_at is not None:
                self._expiring.append((e.expires_at, tenant, k))
            n += 1
        heapq.heapify(self._expiring)
        return n

    def discard(self, address: str, tenant: str) -> None:
        d = self._by_tenant.get(tenant)
        if d is not None:
            d.pop(self.key(address), None)

    def apply(
        self,
        address: str,
        tenant: str,
        active: bool,
        reason: str | None,
        created_at: float | None,
        expires_at: float | None,
    ) -> None:
        if active:
            self.put(address, tenant, reason or "suppressed", created_at or 0.0, expires_at)
        else:
            self.discard(address, tenant)

    def lookup(self, address: str, tenant: str, now: float) -> Entry | None:
        """The suppression that applies to ``address`` for ``tenant`` at ``now``, if any."""
        k = address.lower() if not self.case_sensitive_local else self.key(address)
        e = self._by_tenant[""].get(k)
        if (e is None or (e.expires_at is not None and e.expires_at <= now)) and tenant:
            d = self._by_tenant.get(tenant)
            e = d.get(k) if d is not None else None
        if e is None or (e.expires_at is not None and e.expires_at <= now):
            return None
        if self._allow_addresses or self._allow_domains:
            lk = k.lower()
            if lk in self._allow_addresses or lk.rpartition("@")[2] in self._allow_domains:
                return None
        return e

    def __len__(self) -> int:
        return sum(len(d) for d in self._by_tenant.values())

    def prune_expired(self, now: float) -> int:
        """Drop expired entries (they already stopped applying); returns how many.

        Costs only what has expired (and stale heap records), not the size of the index.
        """
        heap = self._expiring
        n = 0
        while heap and heap[0][0] <= now:
            _, tenant, k = heapq.heappop(heap)
            d = self._by_tenant.get(tenant)
            e = d.get(k) if d is not None else None
            if e is not None and e.expires_at is not None and e.expires_at <= now:
                del d[k]  # type: ignore[union-attr]
                n += 1
        if len(heap) > 2 * len(self) + 10000:  # mostly stale records (re-puts, removals): rebuild
            self._expiring = [
                (e.expires_at, t, k)
                for t, d in self._by_tenant.items()
                for k, e in d.items()
                if e.expires_at is not None
            ]
            heapq.heapify(self._expiring)
        return n
