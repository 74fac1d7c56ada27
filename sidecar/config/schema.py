"""The configuration's frozen dataclasses: every key, its default, its validator and its documentation."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any

from sidecar.config.fields import (
    DEFAULT_DATA_DIR,
    RATE_KEYS,
    WEBHOOK_EVENTS,
    access_action,
    address_pattern,
    db_url,
    delimiter_chars,
    domain_name,
    endpoint,
    event_name,
    exemption,
    http_url,
    lmtp_listen,
    mailbox,
    non_negative_int,
    opt,
    positive_duration,
    positive_int,
    postfix_action,
    probability,
    sha256_hex,
    token_scope,
)
from sidecar.config.senders import DomainConfig, DomainHealthConfig, ReputationConfig
from sidecar.units import parse_duration, parse_size


@dataclass(frozen=True)
class ServerConfig:
    policy: tuple[str, ...] = opt(
        ("tcp:10031:interface=127.0.0.1",),
        parse=endpoint,
        doc="Policy listeners (Twisted endpoint strings); Postfix's check_policy_service connects here.",
    )
    http: str = opt("tcp:9731:interface=127.0.0.1", parse=endpoint, doc="HTTP listener for /metrics and /healthz.")
    safe_action: str = opt(
        "DUNNO", parse=access_action, doc="Action returned when deciding fails unexpectedly (DUNNO = fail open)."
    )
    max_line_length: int = opt(2048, parse=positive_int, doc="Longest accepted attribute line, bytes.")
    max_attributes: int = opt(100, parse=positive_int, doc="Most attributes in one request.")
    max_request_size: int = opt(65536, parse=positive_int, doc="Largest accepted request, bytes.")
    idle_timeout: float = opt(
        600.0,
        parse=parse_duration,
        doc="Close a connection idle this long (Postfix's smtpd_policy_service_max_idle is 300s).",
    )
    request_timeout: float = opt(
        5.0,
        parse=positive_duration,
        doc="A request must be complete this long after its first byte arrived, or its "
        "connection is closed (Postfix sends each request whole).",
    )
    max_connections: int = opt(
        2000,
        parse=positive_int,
        doc="Open connections at most. When full, a new connection evicts the oldest one "
        "stalled mid-request or never answered, else the least recently active; it is "
        "refused only when every connection awaits a decision.",
    )
    db_threads: int = opt(4, parse=positive_int, doc="Size of the thread pool that runs database work.")


@dataclass(frozen=True)
class DatabaseConfig:
    url: str = opt(
        f"sqlite:///{DEFAULT_DATA_DIR}/sidecar.db",
        parse=db_url,
        doc="SQLAlchemy URL. A relative SQLite path is relative to the config file's directory "
        "(the working directory without a file).",
    )
    sync_interval: float = opt(
        0.5, parse=parse_duration, doc="How often the server reads the change feed (suppressions added elsewhere)."
    )


@dataclass(frozen=True)
class SuppressionConfig:
    reply: str = opt(
        "550 5.1.1 <{address}>: recipient suppressed ({reason} {date})",
        parse=access_action,
        doc="Reply for a suppressed recipient; {address}, {reason}, {date}, {tenant} are filled in.",
    )
    local_part_case_sensitive: bool = opt(False, doc="Compare local parts case-sensitively (domains never are).")
    tenant_from: str = opt(
        "sasl_username_or_sender_domain",
        choices=("sasl_username_or_sender_domain", "sasl_username", "sender_domain", "none"),
        doc="How a request's tenant is found, for tenant-scoped suppressions.",
    )
    allowlist: tuple[str, ...] = opt(
        (), parse=address_pattern, doc='Addresses ("a@example.com") or domains ("@example.com") never suppressed.'
    )
    skip_null_sender: bool = opt(True, doc="Do not check mail with the null sender <> (bounces).")


@dataclass(frozen=True)
class LimitConfig:
    rate: int = opt(parse=positive_int, doc="Allowed count per window.")
    per: float = opt(parse=parse_duration, doc='Window length, e.g. "1m", "1d".')
    burst: int = opt(0, parse=non_negative_int, doc="Extra count allowed at once above the steady rate.")


@dataclass(frozen=True)
class RateLimitRule:
    name: str = opt(doc="Rule name; appears in replies, metrics and keys.")
    key: tuple[str, ...] = opt(choices=RATE_KEYS, doc="Request attributes that together form the key.")
    limits: tuple[LimitConfig, ...] = opt(doc="One or more windows, all must admit the request.")
    count: str = opt(
        "messages",
        choices=("messages", "recipients"),
        doc="messages: once per message (checked at DATA, committed at END-OF-MESSAGE); recipients: per RCPT.",
    )
    ipv4_prefix: int = opt(32, parse=non_negative_int, doc="Prefix length for client_address keys (IPv4).")
    ipv6_prefix: int = opt(64, parse=non_negative_int, doc="Prefix length for client_address keys (IPv6).")
    exempt: tuple[str, ...] = opt(
        (), parse=exemption, doc="Key values (or CIDR networks for client_address) that are never limited."
    )
    reply: str = opt(
        "DEFER_IF_PERMIT 4.7.1 rate limit {rule} exceeded ({rate} per {per}), try again later",
        parse=access_action,
        doc="Reply when exceeded; {rule}, {rate}, {per}, {key} are filled in.",
    )


@dataclass(frozen=True)
class RateLimitConfig:
    rules: tuple[RateLimitRule, ...] = opt(())
    persist_interval: float = opt(1.0, parse=parse_duration, doc="How often counters are written to the database.")
    backend: str = opt(
        "memory",
        choices=("memory", "redis"),
        doc="memory: per-relay counters (saved to the database); redis: shared by every relay.",
    )
    redis_url: str = opt("redis://127.0.0.1:6379/0", doc='Redis URL for backend = "redis".')
    redis_timeout: float = opt(
        0.05, parse=parse_duration, doc="Longest wait for Redis before the fallback decides that request."
    )
    redis_fallback: str = opt(
        "local",
        choices=("local", "allow", "defer"),
        doc="When Redis is unavailable: local in-memory limits, allow everything, or defer.",
    )


@dataclass(frozen=True)
class FeedbackLoop:
    recipient: str = opt(
        parse=mailbox,
        doc="Envelope recipient on the bounce domain given only to this feedback-"
        "loop provider, e.g. fbl-yahoo@bounce.example.com.",
    )
    sender_domain: str = opt(
        "", parse=domain_name, doc="If set, the envelope sender must be in this domain (or a subdomain) too."
    )


@dataclass(frozen=True)
class IngestConfig:
    max_message_size: int = opt(10 * 1024 * 1024, parse=parse_size, doc="Largest message read from stdin.")
    socket: str = opt(
        f"{DEFAULT_DATA_DIR}/ingest.sock",
        doc="Unix socket where the running service accepts messages from `sidecar ingest`; empty "
        "disables. Relative to the config file's directory.",
    )
    socket_group: str = opt(
        "",
        doc="Group of the hand-off socket (mode 0660) and of its directory when the service "
        "creates it (0750); empty = the primary group of postfix.pipe_user when that "
        "user exists, else the service's own group.",
    )
    max_handoffs: int = opt(
        32,
        parse=positive_int,
        doc="Hand-off connections served at once; more are closed unanswered (that "
        "`sidecar ingest` then records in-process).",
    )
    lmtp: str = opt(
        "",
        parse=lmtp_listen,
        doc="LMTP listener where Postfix's lmtp(8) client delivers bounces to the running service "
        "(docs/ingest.md): a unix socket path (relative to the config file's directory) or "
        '"tcp:PORT:interface=127.0.0.1" (loopback only); empty disables (the pipe(8) transport then).',
    )
    lmtp_group: str = opt(
        "",
        doc="Group of the LMTP unix socket (mode 0660) and of its directory when the service creates "
        "it (0750); empty = the primary group of the user postfix when it exists (lmtp(8) runs as "
        "Postfix's mail_owner), else the service's own group.",
    )
    lmtp_max_connections: int = opt(
        64,
        parse=positive_int,
        doc="LMTP connections served at once; one more is answered 421 (Postfix defers and retries).",
    )
    lmtp_max_recipients: int = opt(
        100,
        parse=positive_int,
        doc="Recipients accepted in one LMTP transaction; more are answered 452 (Postfix sends them in "
        "another transaction).",
    )
    lmtp_idle_timeout: float = opt(
        300.0,
        parse=positive_duration,
        doc="Close an LMTP connection idle this long (Postfix reuses a cached one for up to 300s).",
    )
    recipient_delimiter: str = opt(
        "+",
        parse=delimiter_chars,
        doc="Postfix's recipient_delimiter: the LMTP listener finds a recipient's extension (the "
        "VERP token) after the first of these characters, as pipe(8)'s ${extension}.",
    )
    verp_key: str = opt("", doc="HMAC key for VERP tokens (bounces+TOKEN@domain); empty disables VERP.")
    soft_threshold: int = opt(3, parse=positive_int, doc="Soft bounces within soft_window that suppress an address.")
    soft_window: float = opt(7 * 86400.0, parse=parse_duration, doc="Window for counting soft bounces.")
    soft_suppression: float = opt(7 * 86400.0, parse=parse_duration, doc="How long a soft-bounce suppression lasts.")
    hard_suppression: float = opt(
        0.0, parse=parse_duration, doc="How long a hard-bounce suppression lasts; 0 = permanent."
    )
    complaint_scope: str = opt(
        "tenant",
        choices=("tenant", "global"),
        doc="Scope of complaint suppressions from a feedback_loops source; complaints from "
        "anywhere else only ever suppress for a tenant.",
    )
    require_verp: bool = opt(
        False, doc="Only a message with a valid VERP token may suppress; others are recorded with decision unverified."
    )
    require_corroboration: bool = opt(
        True,
        doc="An address suppresses only when the VERP token or the relay's "
        "record of recipients confirms it (else decision uncorroborated).",
    )
    feedback_loops: tuple[FeedbackLoop, ...] = opt(
        (), doc="Feedback-loop sources: the only complaints that may suppress globally."
    )
    max_failed_recipients: int = opt(
        100, parse=positive_int, doc="Recipients of one message recorded one by one; the rest are only counted."
    )
    max_suppressions_per_message: int = opt(
        10, parse=non_negative_int, doc="Suppressions one message may cause; the rest are withheld."
    )
    retention_days: int = opt(90, parse=non_negative_int, doc="Days raw messages are kept; 0 = forever.")


@dataclass(frozen=True)
class RecipientsConfig:
    enabled: bool = opt(
        True, doc="Keep the record of accepted recipients that corroborates bounces (docs/recipients.md)."
    )
    expected_per_day: int = opt(
        1_000_000,
        parse=positive_int,
        doc="Distinct (tenant, recipient) pairs a day across all relays: sizes each day's filter.",
    )
    false_positive_rate: float = opt(
        1e-6,
        parse=probability,
        doc="Chance that one test of a day's filter says yes for a pair never recorded, at expected_per_day pairs.",
    )
    retention: float = opt(
        14 * 86400.0,
        parse=parse_duration,
        doc="How long a recipient stays in the record (whole UTC days are kept and dropped).",
    )
    flush_interval: float = opt(
        5.0, parse=parse_duration, doc="How often each relay writes its filters to the database."
    )
    node: str = opt("", doc="This relay's name for its rows in the record; empty = the host name.")


@dataclass(frozen=True)
class PostfixConfig:
    bounce_domain: str = opt("bounce.localhost", doc="Domain whose mail Postfix routes to the ingester.")
    pipe_user: str = opt("sidecar", doc="Unprivileged user pipe(8) runs `sidecar ingest` as.")
    sidecar_bin: str = opt("/opt/postfix-sidecar/bin/sidecar", doc="Path of the sidecar executable for master.cf.")
    default_action: str = opt(
        "DUNNO",
        parse=postfix_action,
        doc="smtpd_policy_service_default_action: DUNNO or fail-open = fail open; "
        "fail-closed (451 4.3.5 ...) or your own 4xx action = fail closed.",
    )
    policy_timeout: float = opt(10.0, parse=parse_duration, doc="smtpd_policy_service_timeout.")


@dataclass(frozen=True)
class ApiToken:
    scope: str = opt(parse=token_scope, doc="read (GET) or write (everything).")
    token: str = opt("", doc="The bearer token itself (prefer token_sha256).")
    token_sha256: str = opt("", parse=sha256_hex, doc="SHA-256 (hex) of the bearer token.")
    name: str = opt("", doc="A label for logs.")


@dataclass(frozen=True)
class ApiConfig:
    tokens: tuple[ApiToken, ...] = opt((), doc="Bearer tokens; without any, only /healthz and /metrics answer.")
    max_body: int = opt(10 * 1024 * 1024, parse=parse_size, doc="Largest accepted request body.")


@dataclass(frozen=True)
class WebhookSubscription:
    url: str = opt(parse=http_url, doc="Where deliveries are POSTed.")
    secret: str = opt(doc="HMAC-SHA256 key for the signature header.")
    events: tuple[str, ...] = opt(WEBHOOK_EVENTS, parse=event_name, doc="Event types to deliver.")
    name: str = opt(
        "",
        doc="Subscription name, used in metrics, logs and lists (default: the URL's "
        "scheme://host:port; give one when two subscriptions share a host).",
    )
    ca_file: str = opt(
        "",
        doc="PEM file of the CA certificates that https:// deliveries trust instead of the "
        "system's (a private CA or a self-signed receiver).",
    )


@dataclass(frozen=True)
class WebhooksConfig:
    subscriptions: tuple[WebhookSubscription, ...] = opt(())
    retry_for: float = opt(86400.0, parse=parse_duration, doc="Keep retrying a delivery this long, then dead-letter.")
    timeout: float = opt(10.0, parse=parse_duration, doc="HTTP timeout of one delivery attempt.")
    poll_interval: float = opt(1.0, parse=parse_duration, doc="How often new events are looked for.")
    backoff: float = opt(
        10.0,
        parse=parse_duration,
        doc="Wait before the first retry of a failed delivery; doubles with each further failure.",
    )
    backoff_max: float = opt(3600.0, parse=parse_duration, doc="Longest wait between two retries of one delivery.")


@dataclass(frozen=True)
class LoggingConfig:
    format: str = opt(
        "text",
        choices=("text", "json"),
        doc="Log lines on stderr: text, or json (one object per line: time, level, logger, message); "
        "--log-format overrides.",
    )


@dataclass(frozen=True)
class Config:
    server: ServerConfig = opt(factory=ServerConfig)
    database: DatabaseConfig = opt(factory=DatabaseConfig)
    suppression: SuppressionConfig = opt(factory=SuppressionConfig)
    ratelimit: RateLimitConfig = opt(factory=RateLimitConfig)
    ingest: IngestConfig = opt(factory=IngestConfig)
    recipients: RecipientsConfig = opt(factory=RecipientsConfig)
    reputation: ReputationConfig = opt(factory=ReputationConfig)
    postfix: PostfixConfig = opt(factory=PostfixConfig)
    api: ApiConfig = opt(factory=ApiConfig)
    webhooks: WebhooksConfig = opt(factory=WebhooksConfig)
    domains: tuple[DomainConfig, ...] = opt(())
    domain_health: DomainHealthConfig = opt(factory=DomainHealthConfig)
    logging: LoggingConfig = opt(factory=LoggingConfig)
    config_path: str | None = field(default=None, metadata={"internal": True})


def iter_documented_keys(cls: type = Config, prefix: str = "") -> typing.Iterator[tuple[str, Any, str]]:
    """(key path, default, doc) for every key: used to keep docs/configuration.md complete."""
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        hint = typing.get_type_hints(cls)[f.name]
        path = f"{prefix}.{f.name}" if prefix else f.name
        inner = typing.get_args(hint)[0] if typing.get_origin(hint) is tuple else hint
        if isinstance(inner, type) and dataclasses.is_dataclass(inner):
            yield from iter_documented_keys(inner, path + ("[]" if inner is not hint else ""))
        else:
            default = f.default if f.default is not dataclasses.MISSING else None
            yield path, default, f.metadata.get("doc", "")
