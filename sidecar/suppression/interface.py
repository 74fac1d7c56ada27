"""What the service, the policy side and the API need of the suppression store.

``SuppressionStore`` (SQLAlchemy) is the real one; ``sidecar.suppression.memory.MemorySuppressionStore``
is the in-memory fake unit tests use. ``SuppressionSource`` is the read side StateSync needs (the
initial load and the change feed); ``SuppressionStoreProtocol`` adds what the API writes and reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from sidecar.suppression.store import SuppressionRow

# A change-feed row: (id, kind, address, tenant, active, reason, created_at, expires_at);
# kind "suppression" (address, tenant ...) or "limit-reset" (address = the rate-limit key).
ChangeRow = Sequence[Any]


class SuppressionSource(Protocol):
    def last_change_id(self) -> int:
        """The highest change-feed id so far (0 when empty)."""

    def iter_active(self, now: float, batch: int = 20000) -> Iterator[Sequence[Any]]:
        """Active unexpired (address, tenant, reason, created_at, expires_at) rows, in batches."""

    def changes_since(self, last_id: int, limit: int = 50000) -> list[Any]:
        """Change-feed rows with id > last_id, in id order (at most ``limit``)."""


class SuppressionStoreProtocol(SuppressionSource, Protocol):
    case_sensitive_local: bool

    def canonical(self, address: str) -> str:
        """The stored form of ``address``."""

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
        """Suppress ``address`` for ``tenant`` ("" = global); returns the suppression id."""

    def remove(self, address: str, *, tenant: str = "", now: float | None = None) -> bool:
        """Lift the active suppression of ``address`` for ``tenant``; False when there was none."""

    def get(self, address: str) -> list[SuppressionRow]:
        """Every row (active or not) of ``address``, by tenant."""


def _conforms() -> None:  # checked by mypy: the real store and the fake both fit the protocol
    from sidecar.suppression.memory import MemorySuppressionStore
    from sidecar.suppression.store import SuppressionStore

    _real: type[SuppressionStoreProtocol] = SuppressionStore
    _fake: type[SuppressionStoreProtocol] = MemorySuppressionStore
