"""The relay's own record of the recipients it accepted mail for: what corroborates a bounce.

Everything inside a bounce is written by whoever sent it, so a bounce may suppress an address
only when our own data shows the address was our recipient: a valid VERP token naming it, or
this record. The policy server adds every recipient it lets through at RCPT; the record is
kept per day and tenant and shared through the store, so every relay and the ingester see it.

This module holds the interface both sides use and an in-memory implementation for unit tests.
Addresses are given in the suppression index's match form (``address.match_key``).
"""

from __future__ import annotations

import socket
import threading
import weakref
from typing import Any, Protocol

DAY = 86400.0
_LOCK = threading.Lock()


class RecipientLookup(Protocol):
    """What the ingester asks: which tenants sent to ``address`` within the retention window."""

    def tenants_for(self, address: str, now: float) -> frozenset[str]:
        """The tenants whose record holds ``address``; empty when we never sent to it.

        Errors reading the store propagate (the ingester then defers the message)."""
        ...


class InMemoryRecipients:
    """Exact in-memory record (no false positives): the unit tests' fake."""

    def __init__(self, retention: float = 30 * DAY) -> None:
        self.retention = retention
        self._seen: dict[str, dict[str, float]] = {}

    def add(self, tenant: str, address: str, now: float) -> None:
        self._seen.setdefault(address, {})[tenant] = now

    def tenants_for(self, address: str, now: float) -> frozenset[str]:
        since = now - self.retention
        return frozenset(t for t, when in self._seen.get(address, {}).items() if when >= since)


# How stale the store's record may be for the ingester (seconds): the filters change once per
# recipients.flush_interval (5 s); a burst of bounces then reads the stamps a few times a second,
# not twice per failed address.
LOOKUP_MAX_AGE = 0.25

_LOOKUPS: weakref.WeakKeyDictionary[Any, dict[float, RecipientLookup]] = weakref.WeakKeyDictionary()


def open_lookup(cfg: Any, engine: Any) -> RecipientLookup:
    """The store-backed record for the ingester: ``cfg`` is the whole Config, ``engine`` the
    store's. With ``recipients.enabled`` false, an empty record (nothing is corroborated by it).

    One lookup per engine (and retention) is kept while the engine lives, so a long-lived
    caller that opens it for every message still loads each filter once per change."""
    rc = cfg.recipients
    if not rc.enabled:
        return InMemoryRecipients(rc.retention)
    from sidecar.store.recipient_days import StoredRecipients

    with _LOCK:
        per_engine = _LOOKUPS.setdefault(engine, {})
        lookup = per_engine.get(rc.retention)
        if lookup is None:
            lookup = per_engine[rc.retention] = StoredRecipients(engine, rc.retention, LOOKUP_MAX_AGE)
    return lookup


class EitherLookup:
    """A pair is recorded when any of ``lookups`` holds it: in ``sidecar serve``, this relay's own
    unflushed record and the store's (every relay's flushed record)."""

    def __init__(self, *lookups: RecipientLookup) -> None:
        self.lookups = lookups

    def tenants_for(self, address: str, now: float) -> frozenset[str]:
        found: frozenset[str] = frozenset()
        for lookup in self.lookups:
            found = found | lookup.tenants_for(address, now)
        return found


def node_name(cfg: Any) -> str:
    """This relay's name for its rows: ``recipients.node``, else the host name."""
    return cfg.recipients.node or socket.gethostname()
