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

from collections.abc import Generator, Iterable, Mapping
from dataclasses import dataclass, field
from hashlib import blake2b

from rbloom import Bloom

from sidecar.suppression.address import match_key

DAY = 86400
# Pairs hashed into a filter per step of apply_steps: ~0.6 ms of CPU (the match form, the
# blake2b hash, rbloom's update). A flush of 15,000 pairs is ~70 ms of CPU: run whole, in a
# pool thread or on the reactor, it held policy requests up for as long (the GIL).
APPLY_SLICE = 128


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
    items: float = 0.0  # the bloom's estimated pairs when it was last saved


class RecipientRecorder:
    """This relay's record: pending pairs (reactor side) and day filters (thread-pool side)."""

    def __init__(self, expected_per_day: int, false_positive_rate: float, case_sensitive_local: bool = False) -> None:
        self.expected = expected_per_day
        self.rate = false_positive_rate
        self.case_sensitive_local = case_sensitive_local
        self._pending: dict[int, set[tuple[str, str]]] = {}
        self._in_flight: dict[int, set[tuple[str, str]]] = {}  # taken by a flush, maybe not applied yet
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
        self._in_flight = pending  # still answered by tenants_for until the next take
        self._day_end = 0.0  # the next add starts a new set
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
        steps = self.apply_steps(day, pairs, stored)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return int(done.value)

    def apply_steps(
        self, day: int, pairs: Iterable[tuple[str, str]], stored: bytes | None = None
    ) -> Generator[None, None, int]:
        """:meth:`apply` a slice of APPLY_SLICE pairs at a time, yielding after each; returns the
        distinct pairs. The service runs it on the reactor through a Cooperator, a few slices per
        turn, so that no policy request waits behind a whole flush."""
        f = self.filters.get(day)
        if f is None:
            f = self.filters[day] = DayFilter(load_filter(stored) if stored else new_filter(self.expected, self.rate))
        f.dirty = True
        cs = self.case_sensitive_local
        items = list(pairs)
        seen: set[tuple[str, str]] = set()
        for i in range(0, len(items), APPLY_SLICE):
            keys = {(t, match_key(r, cs)) for t, r in items[i : i + APPLY_SLICE]} - seen
            seen |= keys
            f.bloom.update([pair_hash(t, a) for t, a in keys])
            f.tenants.update(t for t, _ in keys)
            yield None
        return len(seen)

    def dirty(self) -> list[tuple[int, bytes, float, list[str]]]:
        """(day, filter bytes, estimated pairs, tenants) of each filter changed since it was saved."""
        out = []
        for day, f in sorted(self.filters.items()):
            if f.dirty:
                f.items = f.bloom.approx_items  # counts the set bits: ~4 ms for 1,000,000 pairs
                out.append((day, f.bloom.save_bytes(), f.items, sorted(f.tenants)))
        return out

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

    # -- this process's own lookup -----------------------------------------------------------------

    def tenants_for(self, address: str, now: float) -> frozenset[str]:
        """The tenants this relay let through to ``address`` (match form) and has not flushed yet
        or holds in memory: a bounce often comes back within seconds of the RCPT, before the
        flush reached the store. Safe from a pool thread: it reads snapshots (``list`` of a set
        runs under the GIL) and never changes anything."""
        cs = self.case_sensitive_local
        found: set[str] = set()
        for pending in (self._pending, self._in_flight):
            for pairs in list(pending.values()):
                found.update(t for t, r in list(pairs) if match_key(r, cs) == address)
        for f in list(self.filters.values()):
            for tenant in list(f.tenants):
                if tenant not in found and pair_hash(tenant, address) in f.bloom:
                    found.add(tenant)
        return frozenset(found)

    def items_today(self, now: float) -> float:
        """Today's estimated pairs as of the last flush's ``dirty`` (counted there, in the pool)."""
        f = self.filters.get(day_of(now))
        return f.items if f is not None else 0.0


class DayFilters:
    """The lookup side's view of the window: per day, the nodes' filters OR-ed together, the
    nodes' update stamps they were built from, and the day's tenants. Only the merged filters
    are kept (one per day when every node sizes its filters alike)."""

    def __init__(self) -> None:
        self.stamps: dict[int, dict[str, float]] = {}  # day -> node -> updated_at
        self.blooms: dict[int, list[Bloom]] = {}
        self.tenants: dict[int, frozenset[str]] = {}

    def stale(self, stamps: Mapping[tuple[int, str], float]) -> list[int]:
        """The days whose stored rows (``stamps``: (day, node) -> updated_at) differ from the cached ones."""
        by_day: dict[int, dict[str, float]] = {}
        for (day, node), at in stamps.items():
            by_day.setdefault(day, {})[node] = at
        return sorted(d for d, nodes in by_day.items() if self.stamps.get(d) != nodes)

    def put_day(self, day: int, rows: Iterable[tuple[str, float, bytes]]) -> None:
        """Replace ``day``'s filter with its nodes' ``rows`` ((node, updated_at, filter bytes))."""
        shaped, stamps = [], {}
        for node, at, data in rows:
            b = load_filter(data)
            shaped.append(((b.size_in_bits, data[:8]), b))
            stamps[node] = at
        self.blooms[day] = _merge(shaped)
        self.stamps[day] = stamps

    def keep(self, days: Iterable[int], tenants: Mapping[int, frozenset[str]]) -> None:
        """Forget the days not in ``days`` (they left the window or the store); set the tenants."""
        keep = set(days)
        for day in set(self.stamps) - keep:
            del self.stamps[day], self.blooms[day]
        self.tenants = dict(tenants)

    def tenants_for(self, address: str, now: float, retention: float) -> frozenset[str]:
        lo, hi = first_day(now, retention), day_of(now)
        found: set[str] = set()
        for day, blooms in self.blooms.items():
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
        return sum(b.size_in_bits // 8 for bs in self.blooms.values() for b in bs)


def _merge(blooms: list[tuple[tuple[int, bytes], Bloom]]) -> list[Bloom]:
    """OR together the filters of one day (the nodes') that have the same size and hash count;
    filters sized differently (a config change) stay apart and are tested one by one."""
    by_shape: dict[tuple[int, bytes], Bloom] = {}
    for shape, b in blooms:
        have = by_shape.get(shape)
        by_shape[shape] = b if have is None else have | b
    return list(by_shape.values())
