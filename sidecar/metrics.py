"""Every Prometheus metric, defined once (the default registry, served on /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

POLICY_REQUESTS = Counter("sidecar_policy_requests", "Policy requests answered, by protocol state and action",
                          ["state", "action"])
POLICY_LATENCY = Histogram("sidecar_policy_decision_seconds", "Time to decide one policy request",
                           buckets=(0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025,
                                    0.005, 0.01, 0.05))
POLICY_ERRORS = Counter("sidecar_policy_errors", "Unexpected errors while deciding (safe action returned)")
POLICY_BAD_INPUT = Counter("sidecar_policy_bad_input", "Connections closed for malformed input, by problem",
                           ["problem"])
POLICY_CONNECTIONS = Gauge("sidecar_policy_connections", "Open policy connections")
SUPPRESSIONS = Gauge("sidecar_suppressions", "Suppressions in the in-memory index")
SUPPRESSED = Counter("sidecar_suppressed_recipients", "Recipients refused because they are suppressed")
RATELIMIT_REJECTIONS = Counter("sidecar_ratelimit_rejections", "Requests refused by a rate limit, by rule",
                               ["rule"])
RATELIMIT_KEYS = Gauge("sidecar_ratelimit_keys", "Active rate-limit keys in memory")
RATELIMIT_REDIS_UP = Gauge("sidecar_ratelimit_redis_up", "1 while the Redis rate-limit backend is connected")
RATELIMIT_FALLBACK = Counter("sidecar_ratelimit_fallback", "Rate-limit decisions made by the fallback instead of "
                             "Redis, by cause (down, timeout, error)", ["cause"])
CHANGE_FEED_LAG = Gauge("sidecar_change_feed_last_id", "Last change-feed id applied to the in-memory index")
DB_ERRORS = Counter("sidecar_db_errors", "Database operations that failed, by operation", ["operation"])

INGEST_MESSAGES = Counter("sidecar_ingest_messages", "Messages ingested, by outcome (parsed, unparsed, duplicate, "
                          "tempfail)", ["outcome"])
INGEST_RECIPIENTS = Counter("sidecar_ingest_recipients", "Failed recipients recorded, by category and hard/soft",
                            ["category", "hard"])
INGEST_SUPPRESSIONS = Counter("sidecar_ingest_suppressions", "Suppressions created by the ingester, by reason",
                              ["reason"])
INGEST_LATENCY = Histogram("sidecar_ingest_seconds", "Time to parse and record one message")

API_REQUESTS = Counter("sidecar_api_requests", "Management API requests answered, by route and HTTP status",
                       ["route", "status"])
WEBHOOK_DELIVERIES = Counter("sidecar_webhook_deliveries", "Webhook delivery attempts, by subscription and outcome "
                             "(delivered, failed: retried later, dead: retries exhausted)",
                             ["subscription", "outcome"])
WEBHOOK_ERRORS = Counter("sidecar_webhook_dispatch_errors", "Dispatcher rounds that failed (retried next round)")
