"""The policy server's side of reputation: levels in memory, sends and queue ids pending a flush.

The policy path reads one dict and adds to another; nothing here touches the database.
``sync`` (the service's periodic jobs) swaps the pending counts out and writes them in the
thread pool, and replaces ``levels`` with what the store holds.
"""

from __future__ import annotations

from sidecar import metrics
from sidecar.reputation.levels import HOUR

HOLD_ACTION = "HOLD held for review: sender reputation"
PAUSE_ACTION = "DEFER_IF_PERMIT 4.7.1 sending paused"


class LiveReputation:
    def __init__(self, node: str, throttle_factor: int = 4) -> None:
        self.node = node
        self.throttle_factor = throttle_factor
        self.levels: dict[str, int] = {}  # tenants above level 1 (replaced whole on refresh)
        self.counts: dict[tuple[str, int], int] = {}  # (tenant, hour) -> sends not yet written
        self.messages: list[tuple[str, str, str, bool, float]] = []  # (queue id, tenant, node, held, time)
        self._sends = metrics.REPUTATION_COUNTED.labels("sends")

    def sent(self, tenant: str, recipients: int, queue_id: str, held: bool, now: float) -> None:
        """One message accepted at END-OF-MESSAGE with ``recipients`` recipients."""
        if recipients > 0:
            key = (tenant, int(now // HOUR))
            counts = self.counts
            counts[key] = counts.get(key, 0) + recipients
        if held:
            metrics.REPUTATION_HELD.inc()
        if queue_id:
            self.messages.append((queue_id, tenant, self.node, held, now))

    def take(self) -> tuple[dict[tuple[str, int], tuple[int, int, int]], list[tuple[str, str, str, bool, float]]]:
        """The pending counts and messages (O(1): swapped for empty ones)."""
        counts, self.counts = self.counts, {}
        messages, self.messages = self.messages, []
        if counts:  # the metric once per flush, not per message
            self._sends.inc(sum(counts.values()))
        return {k: (n, 0, 0) for k, n in counts.items()}, messages

    def put_back(
        self, counts: dict[tuple[str, int], tuple[int, int, int]], messages: list[tuple[str, str, str, bool, float]]
    ) -> None:
        """A failed write's rows, kept for the next one."""
        for key, (n, _, _) in counts.items():
            self.counts[key] = self.counts.get(key, 0) + n
        self.messages[:0] = messages
