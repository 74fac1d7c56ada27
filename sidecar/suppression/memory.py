"""MemorySuppressionStore: the in-memory fake of the suppression store (sidecar.suppression.interface).

Same rows, change feed and canonical form as ``SuppressionStore``, in dicts and a list: for
unit tests of what reads or writes suppressions (StateSync, the API) without a database.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from sidecar.suppression.address import canonical
from sidecar.suppression.store import SuppressionRow


class MemorySuppressionStore:
    def __init__(self, case_sensitive_local: bool = False) -> None:
        self.case_sensitive_local = case_sensitive_local
        self.rows: dict[tuple[str, str], SuppressionRow] = {}
        self.changes: list[tuple[Any, ...]] = []

    def canonical(self, address: str) -> str:
        a = canonical(address)
        return a if self.case_sensitive_local else a.lower()

    def _change(
        self,
        kind: str,
        address: str,
        tenant: str,
        active: bool,
        reason: str | None = None,
        created_at: float | None = None,
        expires_at: float | None = None,
    ) -> None:
        self.changes.append((len(self.changes) + 1, kind, address, tenant, active, reason, created_at, expires_at))

    def add(
        self,
        address: str,
        *,
        tenant: str = "",
        reason: str,
        category: str | None = None,
        source: str = "manual",
        note: str | None = None,
        expires_at: float | None = None,
        now: float | None = None,
        cause_event_ids: Iterable[int] = (),
    ) -> int:
        now = time.time() if now is None else now
        addr = self.canonical(address)
        old = self.rows.get((addr, tenant))
        sid = old.id if old is not None else len(self.rows) + 1
        self.rows[addr, tenant] = SuppressionRow(
            sid, addr, tenant, reason, category, source, note, True, now, now, expires_at
        )
        self._change("suppression", addr, tenant, True, reason, now, expires_at)
        return sid

    def remove(self, address: str, *, tenant: str = "", now: float | None = None) -> bool:
        now = time.time() if now is None else now
        addr = self.canonical(address)
        row = self.rows.get((addr, tenant))
        if row is None or not row.active:
            return False
        self.rows[addr, tenant] = SuppressionRow(
            row.id,
            addr,
            tenant,
            row.reason,
            row.category,
            row.source,
            row.note,
            False,
            row.created_at,
            now,
            row.expires_at,
        )
        self._change("suppression", addr, tenant, False)
        return True

    def reset_limit(self, key: str) -> None:
        """What ``sidecar limits reset KEY`` writes: a limit-reset change."""
        self._change("limit-reset", key, "", False)

    def get(self, address: str) -> list[SuppressionRow]:
        addr = self.canonical(address)
        return sorted((r for (a, _), r in self.rows.items() if a == addr), key=lambda r: r.tenant)

    def last_change_id(self) -> int:
        return len(self.changes)

    def iter_active(self, now: float, batch: int = 20000) -> Iterator[Sequence[Any]]:
        rows = [
            (r.address, r.tenant, r.reason, r.created_at, r.expires_at)
            for r in self.rows.values()
            if r.active and (r.expires_at is None or r.expires_at > now)
        ]
        for i in range(0, len(rows), batch):
            yield rows[i : i + batch]

    def changes_since(self, last_id: int, limit: int = 50000) -> list[Any]:
        return self.changes[last_id : last_id + limit]
