"""The record's Bloom filters: one per UTC day and relay node, keyed by tenant and recipient.

Policy side (:class:`RecipientRecorder`): ``add`` runs on the reactor for every recipient let
through and costs a set insertion; the periodic flush takes the pending pairs (O(1) on the
reactor) and, in the database thread pool, hashes them into the day's filter (``apply``) and
writes the dirty filters (``sidecar.store.recipient_days``).

Lookup side (:class:`DayFilters`): the filters of the retention window, the nodes' filters of
one day OR-ed together (same size) or tested one by one (sizes differ after a config change),
and each day's tenants: ``tenants_for`` tests ``tenant + NUL + address`` for each.

Pure: time is passed in; no database here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from hashlib import blake2b

from rbloom import Bloom

from sidecar.suppression.address import match_key

DAY = 86400


def pair_hash(tenant: str, address: str) -> int:
    """The stable 128-bit hash of one (tenant, match-form address) pair: what the filters hold.

    Stable across processes and machines (unlike ``hash``), so filters can be stored,
    loaded and OR-ed; rbloom takes it as a signed 128-bit integer."""
    digest = blake2b(f"{tenant}\0{address}".encode("utf-8", "surrogatepass"), digest_size=16).digest()
    return int.from_bytes(digest, "little", signed=True)


def prehashed(value: int) -> int:
    """rbloom's ``hash_func``: the items are already :func:`pair_hash` values."""
    return value


def new_filter(expected: int, rate: float) -> Bloom:
    return Bloom(expected, rate, prehashed)


def load_filter(data: bytes) -> Bloom:
    return Bloom.load_bytes(data, prehashed)


def day_of(now: float) -> int:
    """The UTC day number of ``now`` (days since the epoch)."""
    return int(now // DAY)


def first_day(now: float, retention: float) -> int:
    """The oldest day still in the window: it holds at least one moment within ``retention``."""
    return day_of(now - retention)


@dataclass
class DayFilter:
    """This node's filter of one day, the tenants it holds, and whether it needs saving."""

    bloom: Bloom
    tenants: set[str] = field(default_factory=set)
    dirty: bool = False


class RecipientRecorder:
    """This relay's record: pending pairs (reactor side) and day filters (thread-pool side)."""

    def __init__(self, expected_per_day: int, false_positive_rate: float, case_sensitive_local: bool = False) -> None:
        self.expected = expected_per_day
        self.rate = false_positive_rate
        self.case_sensitive_local = case_sensitive_local
        self._pending: dict[int, set[tuple[str, str]]] = {}
        self._current: set[tuple[str, str]] = set()
        self._day_end = 0.0
        self.filters: dict[int, DayFilter] = {}

    # -- reactor side ----------------------------------------------------------------------------

    def add(self, tenant: str, recipient: str, now: float) -> None:
        """One recipient let through at RCPT (raw as Postfix gave it): cheap, on the reactor."""
        if now >= self._day_end:
            day = day_of(now)
            self._current = self._pending.setdefault(day, set())
            self._day_end = (day + 1) * DAY
        self._current.add((tenant, recipient))

    def take(self) -> dict[int, set[tuple[str, str]]]:
        """The pending pairs by day, handed to the flush; O(1)."""
        pending, self._pending = self._pending, {}
        self._day_end = 0.0   # the next add starts a new set
        return pending

    def put_back(self, pending: Mapping[int, set[tuple[str, str]]]) -> None:
        """Pairs a failed flush could not apply (kept for the next one)."""
        for day, pairs in pending.items():
            self._pending.setdefault(day, set()).update(pairs)
        self._day_end = 0.0

    # -- thread-pool side ------------------------------------------------------------------------

    def apply(self, day: int, pairs: Iterable[tuple[str, str]], stored: bytes | None = None) -> int:
        """Hash ``pairs`` into ``day``'s filter; ``stored`` seeds a filter not in memory yet
        (this node's row written before a restart). Returns the number of distinct pairs."""
        f = self.filters.get(day)
        if f is None:
            f = self.filters[day] = DayFilter(load_filter(stored) if stored else new_filter(self.expected, self.rate))
        cs = self.case_sensitive_local
        keys = {(t, match_key(r, cs)) for t, r in pairs}
        f.bloom.update([pair_hash(t, a) for t, a in keys])
        f.tenants.update(t for t, _ in keys)
        f.dirty = True
        return len(keys)

    def dirty(self) -> list[tuple[int, bytes, float, list[str]]]:
        """(day, filter bytes, estimated pairs, tenants) of each filter changed since it was saved."""
        return [(day, f.bloom.save_bytes(), f.bloom.approx_items, sorted(f.tenants))
                for day, f in sorted(self.filters.items()) if f.dirty]

    def saved(self, days: Iterable[int], now: float) -> None:
        """The flush wrote ``days``; filters of days before yesterday are dropped from memory."""
        for day in days:
            if day in self.filters:
                self.filters[day].dirty = False
        today = day_of(now)
        for day in [d for d, f in self.filters.items() if d < today - 1 and not f.dirty]:
            del self.filters[day]

    def size_bytes(self) -> int:
        return sum(f.bloom.size_in_bits // 8 for f in self.filters.values())

    def items_today(self, now: float) -> float:
        f = self.filters.get(day_of(now))
        return f.bloom.approx_items if f is not None else 0.0


class DayFilters:
    """The lookup side's view of the window: per day, the nodes' filters and the tenants."""

    def __init__(self) -> None:
        # (day, node) -> (updated_at, shape, filter); the shape (size, hash count) says what may be OR-ed
        self.nodes: dict[tuple[int, str], tuple[float, tuple[int, bytes], Bloom]] = {}
        self.tenants: dict[int, frozenset[str]] = {}
        self._merged: dict[int, list[Bloom]] = {}

    def stale(self, stamps: Mapping[tuple[int, str], float]) -> list[tuple[int, str]]:
        """The (day, node) rows whose stored stamp differs from the cached one."""
        return [k for k, at in stamps.items() if k not in self.nodes or self.nodes[k][0] != at]

    def update(self, stamps: Mapping[tuple[int, str], float], loaded: Mapping[tuple[int, str], tuple[float, bytes]],
               tenants: Mapping[int, frozenset[str]]) -> None:
        """Keep the rows in ``stamps`` (the window), replace those ``loaded``, set the tenants."""
        changed = {day for day, _ in loaded} | {day for day, _ in set(self.nodes) - set(stamps)}
        for key in set(self.nodes) - set(stamps):
            del self.nodes[key]
        for key, (at, data) in loaded.items():
            b = load_filter(data)
            self.nodes[key] = (at, (b.size_in_bits, data[:8]), b)
        self.tenants = dict(tenants)
        for day in changed | (set(self._merged) - {d for d, _ in self.nodes}):
            self._merged.pop(day, None)
        for day in {d for d, _ in self.nodes} - set(self._merged):
            self._merged[day] = _merge([(shape, b) for (d, _), (_, shape, b) in sorted(self.nodes.items()) if d == day])

    def tenants_for(self, address: str, now: float, retention: float) -> frozenset[str]:
        lo, hi = first_day(now, retention), day_of(now)
        found: set[str] = set()
        for day, blooms in self._merged.items():
            if not lo <= day <= hi:
                continue
            for tenant in self.tenants.get(day, ()):
                if tenant in found:
                    continue
                h = pair_hash(tenant, address)
                if any(h in b for b in blooms):
                    found.add(tenant)
        return frozenset(found)

    def size_bytes(self) -> int:
        return sum(b.size_in_bits // 8 for bs in self._merged.values() for b in bs)


def _merge(blooms: list[tuple[tuple[int, bytes], Bloom]]) -> list[Bloom]:
    """OR together the filters of one day (the nodes') that have the same size and hash count;
    filters sized differently (a config change) stay apart and are tested one by one."""
    by_shape: dict[tuple[int, bytes], Bloom] = {}
    for shape, b in blooms:
        have = by_shape.get(shape)
        by_shape[shape] = b if have is None else have | b
    return list(by_shape.values())
