"""Every Prometheus metric, defined once (the default registry, served on /metrics)."""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, Info
from prometheus_client.metrics_core import Metric
from prometheus_client.utils import floatToGoString

from sidecar import __version__ as _version


class PolicyStats:
    """``sidecar_policy_requests`` and ``sidecar_policy_decision_seconds``, counted cheaply.

    Counting is per request, so it is plain arithmetic on the reactor thread (no locks, no
    label look-ups); the figures become the usual counter and histogram families when
    /metrics is scraped, with the same names, labels and buckets as before.
    """

    BUCKETS = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05)

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str], int] = {}
        self.latency_counts = [0] * (len(self.BUCKETS) + 1)  # last: above every bucket (+Inf)
        self.latency_sum = 0.0
        self._created: dict[tuple[str, str], float] = {}
        self._latency_created = time.time()

    def count(
        self, state: str, action: str, seconds: float, _bisect: Any = bisect_left, _buckets: tuple[float, ...] = BUCKETS
    ) -> None:
        """One answered request (``action``'s first word is the label)."""
        self.latency_counts[_bisect(_buckets, seconds)] += 1
        self.latency_sum += seconds
        label = (state, action.partition(" ")[0])
        try:
            self.requests[label] += 1
        except KeyError:
            self._created[label] = time.time()
            self.requests[label] = 1

    def collect(self) -> Iterator[Metric]:
        name = "sidecar_policy_requests"
        c = Metric(name, "Policy requests answered, by protocol state and action", "counter")
        for (state, action), n in list(self.requests.items()):
            labels = {"state": state, "action": action}
            c.add_sample(name + "_total", labels, float(n))
            c.add_sample(name + "_created", labels, self._created[(state, action)])
        yield c
        name = "sidecar_policy_decision_seconds"
        h = Metric(name, "Time to decide one policy request", "histogram")
        total = 0
        for bound, n in zip((*self.BUCKETS, float("inf")), list(self.latency_counts), strict=True):
            total += n
            h.add_sample(name + "_bucket", {"le": floatToGoString(bound)}, float(total))
        h.add_sample(name + "_count", {}, float(total))
        h.add_sample(name + "_sum", {}, self.latency_sum)
        h.add_sample(name + "_created", {}, self._latency_created)
        yield h


POLICY_STATS = PolicyStats()
REGISTRY.register(POLICY_STATS)  # type: ignore[arg-type]
POLICY_ERRORS = Counter("sidecar_policy_errors", "Unexpected errors while deciding (safe action returned)")
POLICY_BAD_INPUT = Counter(
    "sidecar_policy_bad_input",
    "Connections closed for malformed input, a request not complete in time "
    "(request-timeout) or to make room (evicted), by problem",
    ["problem"],
)
POLICY_CONNECTIONS = Gauge("sidecar_policy_connections", "Open policy connections")
SUPPRESSIONS = Gauge("sidecar_suppressions", "Suppressions in the in-memory index")
SUPPRESSED = Counter("sidecar_suppressed_recipients", "Recipients refused because they are suppressed")
RATELIMIT_REJECTIONS = Counter("sidecar_ratelimit_rejections", "Requests refused by a rate limit, by rule", ["rule"])
RATELIMIT_KEYS = Gauge("sidecar_ratelimit_keys", "Active rate-limit keys in memory")
# exported only with ratelimit.backend = "redis" (registered by init_for_config): an alert on
# `sidecar_ratelimit_redis_up == 0` must not fire on relays that use the in-memory backend
RATELIMIT_REDIS_UP = Gauge(
    "sidecar_ratelimit_redis_up", "1 while the Redis rate-limit backend is connected", registry=None
)
RATELIMIT_FALLBACK = Counter(
    "sidecar_ratelimit_fallback",
    "Rate-limit decisions made by the fallback instead of Redis, by cause (down, timeout, error)",
    ["cause"],
)
RATELIMIT_REDIS_BATCH = Histogram(
    "sidecar_ratelimit_redis_batch", "Decisions sent to Redis in one script call", buckets=(1, 2, 5, 10, 20, 50, 100)
)
CHANGE_FEED_LAG = Gauge("sidecar_change_feed_last_id", "Last change-feed id applied to the in-memory index")
DB_UP = Gauge(
    "sidecar_db_up", "1 while the database answers the periodic sync jobs, 0 from a failure until one succeeds"
)
DB_ERRORS = Counter("sidecar_db_errors", "Database operations that failed, by operation", ["operation"])

INGEST_MESSAGES = Counter(
    "sidecar_ingest_messages", "Messages ingested, by outcome (parsed, unparsed, duplicate, tempfail)", ["outcome"]
)
INGEST_RECIPIENTS = Counter(
    "sidecar_ingest_recipients", "Failed recipients recorded, by category and hard/soft", ["category", "hard"]
)
INGEST_SUPPRESSIONS = Counter(
    "sidecar_ingest_suppressions", "Suppressions created by the ingester, by reason", ["reason"]
)
INGEST_WITHHELD = Counter(
    "sidecar_ingest_withheld",
    "Suppressions a message asked for but was not trusted for, by decision (uncorroborated, unverified, no-tenant)",
    ["decision"],
)
INGEST_CAPS = Counter(
    "sidecar_ingest_caps_reached", "Messages that hit a per-message cap, by cap (recipients, suppressions)", ["cap"]
)
INGEST_LATENCY = Histogram("sidecar_ingest_seconds", "Time to parse and record one message")
INGEST_GROUP_SIZE = Histogram(
    "sidecar_ingest_group_size",
    "Hand-offs written in one transaction (group commit: those that arrived while the previous one was written)",
    buckets=(1, 2, 4, 8, 16, 32, 64),
)

LMTP_CONNECTIONS = Counter("sidecar_lmtp_connections", "LMTP connections accepted (Postfix's lmtp client caches them)")
LMTP_MESSAGES = Counter("sidecar_lmtp_messages", "Messages received over LMTP (each recorded once per recipient)")
LMTP_RECIPIENTS = Counter("sidecar_lmtp_recipients", "Recipients of the messages received over LMTP")
LMTP_REPLIES = Counter(
    "sidecar_lmtp_replies",
    "LMTP replies by outcome: accepted (250 after the commit), tempfail (451: not recorded), "
    "refused (a command refused: syntax, bounds), busy (421: over ingest.lmtp_max_connections)",
    ["outcome"],
)

API_REQUESTS = Counter(
    "sidecar_api_requests", "Management API requests answered, by route and HTTP status", ["route", "status"]
)
WEBHOOK_DELIVERIES = Counter(
    "sidecar_webhook_deliveries",
    "Webhook delivery attempts, by subscription and outcome "
    "(delivered, failed: retried later, dead: retries exhausted)",
    ["subscription", "outcome"],
)
WEBHOOK_ERRORS = Counter(
    "sidecar_webhook_dispatch_errors",
    "Dispatcher errors: a subscription's new deliveries not derived, or a round that failed (both retried next round)",
)

RECIPIENT_RECORD_ADDS = Counter(
    "sidecar_recipient_record_adds",
    "Distinct (tenant, recipient) pairs added to this relay's record of recipients (counted per flush)",
)
RECIPIENT_RECORD_BYTES = Gauge("sidecar_recipient_record_bytes", "Size of this relay's record filters in memory")
RECIPIENT_RECORD_ITEMS = Gauge(
    "sidecar_recipient_record_items",
    "Estimated pairs in today's filter of this relay (above recipients.expected_per_day, false positives grow)",
)

DOMAIN_CHECK = Gauge(
    "sidecar_domain_check",
    "State of one domain-health check (0 pass, 1 warn, 2 fail, 3 temperror: DNS did not answer), by domain and check",
    ["domain", "check"],
)
DOMAIN_SCORE = Gauge("sidecar_domain_health_score", "Domain health score, 0-100 (docs/domain-health.md)", ["domain"])
DOMAIN_CHECKED_AT = Gauge(
    "sidecar_domain_checked_timestamp_seconds", "When a domain's checks last completed (Unix time)", ["domain"]
)
DOMAIN_CHECK_ROUNDS = Counter(
    "sidecar_domain_check_rounds", "Rounds of a domain's checks, by outcome (done, error)", ["domain", "outcome"]
)

BUILD_INFO = Info("sidecar_build", "The running sidecar's version")
BUILD_INFO.info({"version": _version})

# Label values known in advance get a sample (0) from the start, so that increase() and rate()
# see the first event too (a series that appears at 1 has no increase).
KNOWN_LABELS: dict[Any, tuple[tuple[str, ...], ...]] = {
    POLICY_BAD_INPUT: tuple(
        (p,)
        for p in (
            "binary",
            "empty-request",
            "line-too-long",
            "no-equals",
            "request-too-large",
            "too-many-attributes",
            "bad-request-type",
            "too-many-connections",
            "request-timeout",
            "evicted",
        )
    ),
    RATELIMIT_FALLBACK: (("down",), ("timeout",), ("error",)),
    DB_ERRORS: (("changes",), ("counters",), ("refusals",), ("recipients",), ("retention",)),
    INGEST_MESSAGES: (("parsed",), ("unparsed",), ("duplicate",), ("tempfail",)),
    INGEST_WITHHELD: (("uncorroborated",), ("unverified",), ("no-tenant",)),
    INGEST_CAPS: (("recipients",), ("suppressions",)),
    INGEST_SUPPRESSIONS: (("hard bounce",), ("soft bounces",), ("complaint",)),
    LMTP_REPLIES: (("accepted",), ("tempfail",), ("refused",), ("busy",)),
}
WEBHOOK_OUTCOMES = ("delivered", "failed", "dead")


def _init_known() -> None:
    for metric, values in KNOWN_LABELS.items():
        for labels in values:
            metric.labels(*labels)


def init_for_config(cfg: Any) -> None:
    """Series that depend on the configuration: rejections per rate-limit rule, deliveries per
    webhook subscription, and the Redis gauge when (only when) Redis is the backend."""
    from sidecar.webhooks.outbox import subscriptions

    for rule in cfg.ratelimit.rules:
        RATELIMIT_REJECTIONS.labels(rule.name)
    for sub in subscriptions(cfg.webhooks.subscriptions):
        for outcome in WEBHOOK_OUTCOMES:
            WEBHOOK_DELIVERIES.labels(sub.name, outcome)
    if cfg.ratelimit.backend == "redis" and RATELIMIT_REDIS_UP not in _registered():
        REGISTRY.register(RATELIMIT_REDIS_UP)


def _registered() -> set[Any]:
    return set(getattr(REGISTRY, "_collector_to_names", {}))


_init_known()
REPUTATION_LEVEL = Gauge(
    "sidecar_reputation_level",
    "Reputation level (1-5) per tenant: tenants above normal, and the reputation.metrics_top busiest",
    ["tenant"],
)
REPUTATION_RATE = Gauge(
    "sidecar_reputation_rate",
    "Bounce or complaint rate over the window per tenant (the same tenants as sidecar_reputation_level)",
    ["tenant", "kind"],
)
REPUTATION_TRANSITIONS = Counter(
    "sidecar_reputation_transitions", "Reputation level changes, by level left and level entered", ["from", "to"]
)
REPUTATION_COUNTED = Counter(
    "sidecar_reputation_counted", "What reputation counts: sends, hard_bounces, complaints (all tenants)", ["kind"]
)
REPUTATION_HELD = Counter("sidecar_reputation_held", "Messages answered HOLD at level 4")
REPUTATION_HELD_NOW = Gauge(
    "sidecar_reputation_held_messages", "Messages this relay answered HOLD that no operator has released or deleted yet"
)
REPUTATION_HELD_OLDEST = Gauge(
    "sidecar_reputation_held_oldest_seconds", "Age of the oldest of them (0: none), updated each reputation evaluation"
)
REPUTATION_HELD_DONE = Counter(
    "sidecar_reputation_held_done", "Held messages released or deleted by an operator, by action", ["action"]
)
