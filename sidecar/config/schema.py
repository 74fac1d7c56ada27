"""Load the TOML configuration, validate it and return frozen dataclasses.

Validation happens before anything listens.  Every error names the key path,
e.g. ``ratelimit.rules[2].limits[0].per: expected a duration like "1h"``.
Unknown keys are errors.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sidecar.units import parse_duration  # noqa: F401  (the one duration parser, re-exported)

DEFAULT_DATA_DIR = "var"


class ConfigError(ValueError):
    """A configuration problem; the message starts with the key path."""


def _positive_duration(value: object) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError('expected a positive duration like "5s"')
    return seconds


def parse_size(value: object) -> int:
    """``"10MB"``, ``"512k"`` or a number of bytes."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        m = re.match(r"^\s*(\d+)\s*([kmg]?)i?b?\s*$", value, re.I)
        if m:
            return int(m.group(1)) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[m.group(2).lower()]
    raise ValueError('expected a size like "10MB" or a number of bytes')


# Field metadata: "parse" converts/validates a raw TOML value; "choices" restricts strings.
def _f(default: Any = dataclasses.MISSING, *, parse: Any = None, choices: tuple[str, ...] | None = None,
       doc: str = "", factory: Any = dataclasses.MISSING) -> Any:
    meta = {"parse": parse, "choices": choices, "doc": doc}
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


RATE_KEYS = ("sasl_username", "sender", "sender_domain", "client_address", "recipient_domain")
SAFE_ACTIONS = re.compile(r"^(DUNNO|OK|DEFER_IF_PERMIT\b.*|DEFER_IF_REJECT\b.*|DEFER\b.*|[45]\d\d\b.*|REJECT\b.*)$")


def _action(value: object) -> str:
    if not isinstance(value, str) or not SAFE_ACTIONS.match(value) or "\n" in value:
        raise ValueError("expected a Postfix access(5) action such as DUNNO, DEFER_IF_PERMIT ... or 451 4.3.5 ...")
    return value


def _postfix_action(value: object) -> str:
    """``postfix.default_action``: ``fail-open``, ``fail-closed`` or an action that ``postfix-config`` renders."""
    from sidecar.postfix_config import TemplateError, postfix_default_action

    if not isinstance(value, str) or "\n" in value:
        raise ValueError("expected fail-open, fail-closed or a Postfix action such as DUNNO or 451 4.3.5 ...")
    try:
        rendered = postfix_default_action(value)
    except TemplateError:
        raise ValueError("expected fail-open, fail-closed or a Postfix action such as DUNNO or 451 4.3.5 ...") from None
    return value.strip().lower() if rendered != " ".join(value.split()) else value   # an alias: its usual spelling


def _endpoint(value: object) -> str:
    if not isinstance(value, str) or not re.match(r"^(tcp6?|unix|ssl|systemd):", value):
        raise ValueError('expected a Twisted endpoint like "tcp:10031:interface=127.0.0.1" or "unix:/run/sidecar.sock"')
    return value


def _db_url(value: object) -> str:
    if not isinstance(value, str) or "://" not in value:
        raise ValueError('expected a database URL like "sqlite:///var/sidecar.db" or "postgresql+psycopg://..."')
    return value


def _positive_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError("expected a positive integer")
    return value


def _non_negative_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError("expected a non-negative integer")
    return value


def _address_pattern(value: object) -> str:
    if not isinstance(value, str) or "@" not in value or value.count("@") > 1:
        raise ValueError('expected an address "user@example.com" or a domain "@example.com"')
    return value.strip().lower()


def _exemption(value: object) -> str:
    """A key value to exempt: an address, a domain, a SASL user or a CIDR network."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected a non-empty string (address, @domain, SASL user or CIDR network)")
    v = value.strip()
    if "/" in v:
        try:
            ipaddress.ip_network(v, strict=False)
        except ValueError:
            raise ValueError(f"{v!r} is not a valid CIDR network") from None
    return v.lower()


@dataclass(frozen=True)
class ServerConfig:
    policy: tuple[str, ...] = _f(("tcp:10031:interface=127.0.0.1",), parse=_endpoint,
                                 doc="Policy listeners (Twisted endpoint strings); "
                                     "Postfix's check_policy_service connects here.")
    http: str = _f("tcp:9731:interface=127.0.0.1", parse=_endpoint, doc="HTTP listener for /metrics and /healthz.")
    safe_action: str = _f("DUNNO", parse=_action,
                          doc="Action returned when deciding fails unexpectedly (DUNNO = fail open).")
    max_line_length: int = _f(2048, parse=_positive_int, doc="Longest accepted attribute line, bytes.")
    max_attributes: int = _f(100, parse=_positive_int, doc="Most attributes in one request.")
    max_request_size: int = _f(65536, parse=_positive_int, doc="Largest accepted request, bytes.")
    idle_timeout: float = _f(600.0, parse=parse_duration,
                             doc="Close a connection idle this long (Postfix's smtpd_policy_service_max_idle is 300s).")
    request_timeout: float = _f(5.0, parse=_positive_duration,
                                doc="A request must be complete this long after its first byte arrived, or its "
                                    "connection is closed (Postfix sends each request whole).")
    max_connections: int = _f(2000, parse=_positive_int,
                              doc="Open connections at most. When full, a new connection evicts the oldest one "
                                  "stalled mid-request or never answered, else the least recently active; it is "
                                  "refused only when every connection awaits a decision.")
    db_threads: int = _f(4, parse=_positive_int, doc="Size of the thread pool that runs database work.")


@dataclass(frozen=True)
class DatabaseConfig:
    url: str = _f(f"sqlite:///{DEFAULT_DATA_DIR}/sidecar.db", parse=_db_url,
                  doc="SQLAlchemy URL. A relative SQLite path is relative to the config file's directory "
                      "(the working directory without a file).")
    sync_interval: float = _f(0.5, parse=parse_duration,
                              doc="How often the server reads the change feed (suppressions added elsewhere).")


@dataclass(frozen=True)
class SuppressionConfig:
    reply: str = _f("550 5.1.1 <{address}>: recipient suppressed ({reason} {date})", parse=_action,
                    doc="Reply for a suppressed recipient; {address}, {reason}, {date}, {tenant} are filled in.")
    local_part_case_sensitive: bool = _f(False, doc="Compare local parts case-sensitively (domains never are).")
    tenant_from: str = _f("sasl_username_or_sender_domain",
                          choices=("sasl_username_or_sender_domain", "sasl_username", "sender_domain", "none"),
                          doc="How a request's tenant is found, for tenant-scoped suppressions.")
    allowlist: tuple[str, ...] = _f((), parse=_address_pattern,
                                    doc='Addresses ("a@example.com") or domains ("@example.com") never suppressed.')
    skip_null_sender: bool = _f(True, doc="Do not check mail with the null sender <> (bounces).")


@dataclass(frozen=True)
class LimitConfig:
    rate: int = _f(parse=_positive_int, doc="Allowed count per window.")
    per: float = _f(parse=parse_duration, doc='Window length, e.g. "1m", "1d".')
    burst: int = _f(0, parse=_non_negative_int, doc="Extra count allowed at once above the steady rate.")


@dataclass(frozen=True)
class RateLimitRule:
    name: str = _f(doc="Rule name; appears in replies, metrics and keys.")
    key: tuple[str, ...] = _f(choices=RATE_KEYS, doc="Request attributes that together form the key.")
    limits: tuple[LimitConfig, ...] = _f(doc="One or more windows, all must admit the request.")
    count: str = _f("messages", choices=("messages", "recipients"),
                    doc="messages: once per message (checked at DATA, committed at END-OF-MESSAGE); "
                        "recipients: per RCPT.")
    ipv4_prefix: int = _f(32, parse=_non_negative_int, doc="Prefix length for client_address keys (IPv4).")
    ipv6_prefix: int = _f(64, parse=_non_negative_int, doc="Prefix length for client_address keys (IPv6).")
    exempt: tuple[str, ...] = _f((), parse=_exemption,
                                 doc="Key values (or CIDR networks for client_address) that are never limited.")
    reply: str = _f("DEFER_IF_PERMIT 4.7.1 rate limit {rule} exceeded ({rate} per {per}), try again later",
                    parse=_action, doc="Reply when exceeded; {rule}, {rate}, {per}, {key} are filled in.")


@dataclass(frozen=True)
class RateLimitConfig:
    rules: tuple[RateLimitRule, ...] = _f(())
    persist_interval: float = _f(1.0, parse=parse_duration, doc="How often counters are written to the database.")
    backend: str = _f("memory", choices=("memory", "redis"),
                      doc="memory: per-relay counters (saved to the database); redis: shared by every relay.")
    redis_url: str = _f("redis://127.0.0.1:6379/0", doc="Redis URL for backend = \"redis\".")
    redis_timeout: float = _f(0.05, parse=parse_duration,
                              doc="Longest wait for Redis before the fallback decides that request.")
    redis_fallback: str = _f("local", choices=("local", "allow", "defer"),
                             doc="When Redis is unavailable: local in-memory limits, allow everything, or defer.")


def _mailbox(value: object) -> str:
    if not isinstance(value, str) or value.count("@") != 1 or value.startswith("@") or value.endswith("@") \
            or any(c.isspace() for c in value):
        raise ValueError('expected an address like "fbl-yahoo@bounce.example.com"')
    return value.strip().lower()


def _domain_name(value: object) -> str:
    if not isinstance(value, str) or "@" in value or any(c.isspace() for c in value):
        raise ValueError('expected a domain like "yahoo.com" (or "" for any)')
    return value.strip().strip(".").lower()


@dataclass(frozen=True)
class FeedbackLoop:
    recipient: str = _f(parse=_mailbox, doc="Envelope recipient on the bounce domain given only to this feedback-"
                                            "loop provider, e.g. fbl-yahoo@bounce.example.com.")
    sender_domain: str = _f("", parse=_domain_name,
                            doc="If set, the envelope sender must be in this domain (or a subdomain) too.")


@dataclass(frozen=True)
class IngestConfig:
    max_message_size: int = _f(10 * 1024 * 1024, parse=parse_size, doc="Largest message read from stdin.")
    socket: str = _f(f"{DEFAULT_DATA_DIR}/ingest.sock",
                     doc="Unix socket where the running service accepts messages from `sidecar ingest`; empty "
                         "disables. Relative to the config file's directory.")
    socket_group: str = _f("", doc="Group of the hand-off socket (mode 0660) and of its directory when the service "
                                   "creates it (0750); empty = the primary group of postfix.pipe_user when that "
                                   "user exists, else the service's own group.")
    max_handoffs: int = _f(32, parse=_positive_int,
                           doc="Hand-off connections served at once; more are closed unanswered (that "
                               "`sidecar ingest` then records in-process).")
    verp_key: str = _f("", doc="HMAC key for VERP tokens (bounces+TOKEN@domain); empty disables VERP.")
    soft_threshold: int = _f(3, parse=_positive_int, doc="Soft bounces within soft_window that suppress an address.")
    soft_window: float = _f(7 * 86400.0, parse=parse_duration, doc="Window for counting soft bounces.")
    soft_suppression: float = _f(7 * 86400.0, parse=parse_duration, doc="How long a soft-bounce suppression lasts.")
    hard_suppression: float = _f(0.0, parse=parse_duration,
                                 doc="How long a hard-bounce suppression lasts; 0 = permanent.")
    complaint_scope: str = _f("tenant", choices=("tenant", "global"),
                              doc="Scope of complaint suppressions from a feedback_loops source; complaints from "
                                  "anywhere else only ever suppress for a tenant.")
    require_verp: bool = _f(False, doc="Only a message with a valid VERP token may suppress; others are recorded "
                                       "with decision unverified.")
    require_corroboration: bool = _f(True, doc="An address suppresses only when the VERP token or the relay's "
                                               "record of recipients confirms it (else decision uncorroborated).")
    feedback_loops: tuple[FeedbackLoop, ...] = _f((), doc="Feedback-loop sources: the only complaints that may "
                                                          "suppress globally.")
    max_failed_recipients: int = _f(100, parse=_positive_int,
                                    doc="Recipients of one message recorded one by one; the rest are only counted.")
    max_suppressions_per_message: int = _f(10, parse=_non_negative_int,
                                           doc="Suppressions one message may cause; the rest are withheld.")
    retention_days: int = _f(90, parse=_non_negative_int, doc="Days raw messages are kept; 0 = forever.")


def _probability(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ValueError("expected a number between 0 and 1, like 1e-6")
    return float(value)


@dataclass(frozen=True)
class RecipientsConfig:
    enabled: bool = _f(True, doc="Keep the record of accepted recipients that corroborates bounces "
                                 "(docs/recipients.md).")
    expected_per_day: int = _f(1_000_000, parse=_positive_int,
                               doc="Distinct (tenant, recipient) pairs a day across all relays: sizes each day's "
                                   "filter.")
    false_positive_rate: float = _f(1e-6, parse=_probability,
                                    doc="Chance that one test of a day's filter says yes for a pair never "
                                        "recorded, at expected_per_day pairs.")
    retention: float = _f(14 * 86400.0, parse=parse_duration,
                          doc="How long a recipient stays in the record (whole UTC days are kept and dropped).")
    flush_interval: float = _f(5.0, parse=parse_duration,
                               doc="How often each relay writes its filters to the database.")
    node: str = _f("", doc="This relay's name for its rows in the record; empty = the host name.")


@dataclass(frozen=True)
class PostfixConfig:
    bounce_domain: str = _f("bounce.localhost", doc="Domain whose mail Postfix routes to the ingester.")
    pipe_user: str = _f("sidecar", doc="Unprivileged user pipe(8) runs `sidecar ingest` as.")
    sidecar_bin: str = _f("/opt/postfix-sidecar/bin/sidecar", doc="Path of the sidecar executable for master.cf.")
    default_action: str = _f("DUNNO", parse=_postfix_action,
                             doc="smtpd_policy_service_default_action: DUNNO or fail-open = fail open; "
                                 "fail-closed (451 4.3.5 ...) or your own 4xx action = fail closed.")
    policy_timeout: float = _f(10.0, parse=parse_duration, doc="smtpd_policy_service_timeout.")


def _token_scope(value: object) -> str:
    if value not in ("read", "write"):
        raise ValueError("expected read or write")
    return str(value)


def _sha256_hex(value: object) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", value):
        raise ValueError("expected 64 hex digits (the SHA-256 of the token)")
    return value.lower()


def _url(value: object) -> str:
    if not isinstance(value, str) or not re.match(r"^https?://[^\s/]+", value):
        raise ValueError("expected an http:// or https:// URL")
    if "@" in re.split(r"[/?#]", value.split("://", 1)[1], maxsplit=1)[0]:
        raise ValueError("expected a URL without user:password@ (deliveries are authenticated by their signature)")
    return value


def redact_url(url: str) -> str:
    """``scheme://host[:port]``: no credentials, path, query or fragment (a webhook's default name)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")


WEBHOOK_EVENTS = ("bounce.recorded", "complaint.recorded", "suppression.added", "suppression.removed",
                  "ratelimit.exceeded")


def _event_name(value: object) -> str:
    if value not in WEBHOOK_EVENTS:
        raise ValueError(f"expected one of {', '.join(WEBHOOK_EVENTS)}")
    return str(value)


@dataclass(frozen=True)
class ApiToken:
    scope: str = _f(parse=_token_scope, doc="read (GET) or write (everything).")
    token: str = _f("", doc="The bearer token itself (prefer token_sha256).")
    token_sha256: str = _f("", parse=_sha256_hex, doc="SHA-256 (hex) of the bearer token.")
    name: str = _f("", doc="A label for logs.")


@dataclass(frozen=True)
class ApiConfig:
    tokens: tuple[ApiToken, ...] = _f((), doc="Bearer tokens; without any, only /healthz and /metrics answer.")
    max_body: int = _f(10 * 1024 * 1024, parse=parse_size, doc="Largest accepted request body.")


@dataclass(frozen=True)
class WebhookSubscription:
    url: str = _f(parse=_url, doc="Where deliveries are POSTed.")
    secret: str = _f(doc="HMAC-SHA256 key for the signature header.")
    events: tuple[str, ...] = _f(WEBHOOK_EVENTS, parse=_event_name, doc="Event types to deliver.")
    name: str = _f("", doc="Subscription name, used in metrics, logs and lists (default: the URL's "
                           "scheme://host:port; give one when two subscriptions share a host).")
    ca_file: str = _f("", doc="PEM file of the CA certificates that https:// deliveries trust instead of the "
                              "system's (a private CA or a self-signed receiver).")


@dataclass(frozen=True)
class WebhooksConfig:
    subscriptions: tuple[WebhookSubscription, ...] = _f(())
    retry_for: float = _f(86400.0, parse=parse_duration, doc="Keep retrying a delivery this long, then dead-letter.")
    timeout: float = _f(10.0, parse=parse_duration, doc="HTTP timeout of one delivery attempt.")
    poll_interval: float = _f(1.0, parse=parse_duration, doc="How often new events are looked for.")
    backoff: float = _f(10.0, parse=parse_duration,
                        doc="Wait before the first retry of a failed delivery; doubles with each further failure.")
    backoff_max: float = _f(3600.0, parse=parse_duration, doc="Longest wait between two retries of one delivery.")


@dataclass(frozen=True)
class Config:
    server: ServerConfig = _f(factory=ServerConfig)
    database: DatabaseConfig = _f(factory=DatabaseConfig)
    suppression: SuppressionConfig = _f(factory=SuppressionConfig)
    ratelimit: RateLimitConfig = _f(factory=RateLimitConfig)
    ingest: IngestConfig = _f(factory=IngestConfig)
    recipients: RecipientsConfig = _f(factory=RecipientsConfig)
    postfix: PostfixConfig = _f(factory=PostfixConfig)
    api: ApiConfig = _f(factory=ApiConfig)
    webhooks: WebhooksConfig = _f(factory=WebhooksConfig)
    config_path: str | None = field(default=None, metadata={"internal": True})


def _build(cls: type, raw: object, path: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{path or 'config'}: expected a table")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    for key in raw:
        if key not in fields:
            where = f"{path}.{key}" if path else key
            raise ConfigError(f"{where}: unknown key (known: {', '.join(sorted(fields))})")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        where = f"{path}.{name}" if path else name
        if name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{where}: required key is missing")
            continue
        kwargs[name] = _value(hints[name], f, raw[name], where)
    try:
        obj = cls(**kwargs)
    except ValueError as e:
        raise ConfigError(f"{path}: {e}") from None
    return obj


def _value(hint: Any, f: dataclasses.Field, raw: object, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin is tuple:
        item = typing.get_args(hint)[0]
        if not isinstance(raw, list):
            if not (isinstance(raw, str) and item is str):
                raise ConfigError(f"{where}: expected a list")
            raw = [raw]
        return tuple(_scalar(item, f, v, f"{where}[{i}]") for i, v in enumerate(raw))
    return _scalar(hint, f, raw, where)


def _scalar(hint: Any, f: dataclasses.Field, raw: object, where: str) -> Any:
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _build(hint, raw, where)
    parse = f.metadata.get("parse")
    choices = f.metadata.get("choices")
    try:
        if parse is not None:
            return parse(raw)
        if hint is bool:
            if not isinstance(raw, bool):
                raise ValueError("expected true or false")
            return raw
        if hint is str or (isinstance(hint, types.UnionType) and str in typing.get_args(hint)):
            if not isinstance(raw, str):
                raise ValueError("expected a string")
            if choices and raw not in choices:
                raise ValueError(f"expected one of {', '.join(choices)}")
            return raw
        if hint is int:
            return _non_negative_int(raw)
        if hint is float:
            return parse_duration(raw)
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None
    raise ConfigError(f"{where}: unsupported value")  # pragma: no cover


def _check(cfg: Config) -> None:
    names = set()
    for i, rule in enumerate(cfg.ratelimit.rules):
        where = f"ratelimit.rules[{i}]"
        if not rule.name or not re.match(r"^[A-Za-z0-9_.-]+$", rule.name):
            raise ConfigError(f"{where}.name: expected letters, digits, '_', '.' or '-'")
        if rule.name in names:
            raise ConfigError(f"{where}.name: duplicate rule name {rule.name!r}")
        names.add(rule.name)
        if not rule.key:
            raise ConfigError(f"{where}.key: expected at least one of {', '.join(RATE_KEYS)}")
        if not rule.limits:
            raise ConfigError(f"{where}.limits: expected at least one window")
        if rule.ipv4_prefix > 32:
            raise ConfigError(f"{where}.ipv4_prefix: expected 0-32")
        if rule.ipv6_prefix > 128:
            raise ConfigError(f"{where}.ipv6_prefix: expected 0-128")
        for j, lim in enumerate(rule.limits):
            if lim.per <= 0:
                raise ConfigError(f"{where}.limits[{j}].per: expected a positive duration")
    for i, tok in enumerate(cfg.api.tokens):
        if bool(tok.token) == bool(tok.token_sha256):
            raise ConfigError(f"api.tokens[{i}]: give exactly one of token or token_sha256")
    sub_names: dict[str, int] = {}
    for i, sub in enumerate(cfg.webhooks.subscriptions):
        if not sub.secret:
            raise ConfigError(f"webhooks.subscriptions[{i}].secret: expected a non-empty secret")
        name = sub.name or redact_url(sub.url)
        if name in sub_names:
            raise ConfigError(f"webhooks.subscriptions[{i}].name: {name!r} is already "
                              f"webhooks.subscriptions[{sub_names[name]}]'s name (give each subscription a name)")
        sub_names[name] = i
    if cfg.recipients.flush_interval <= 0:
        raise ConfigError("recipients.flush_interval: expected a positive duration")
    if cfg.recipients.retention < 86400:
        raise ConfigError('recipients.retention: expected at least "1d"')
    try:
        cfg.suppression.reply.format(address="a@b", reason="r", date="d", tenant="t")
    except (KeyError, IndexError, ValueError) as e:
        raise ConfigError(f"suppression.reply: bad placeholder {e}") from None
    for i, rule in enumerate(cfg.ratelimit.rules):
        try:
            rule.reply.format(rule="r", rate=1, per="1m", key="k")
        except (KeyError, IndexError, ValueError) as e:
            raise ConfigError(f"ratelimit.rules[{i}].reply: bad placeholder {e}") from None


def load_config(path: str | os.PathLike[str] | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Read and validate ``path`` (or defaults when None); ``overrides`` are dotted keys."""
    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            with p.open("rb") as fh:
                raw = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"{p}: no such file") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{p}: not valid TOML: {e}") from None
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        section, key = dotted.split(".", 1)
        if dotted == "database.url" and isinstance(value, str):
            value = absolute_sqlite_url(value, Path.cwd())   # a command-line path is relative to here
        raw.setdefault(section, {})[key] = value
    cfg = _build(Config, raw, "")
    _check(cfg)
    base = Path(path).resolve().parent if path else Path.cwd()
    cfg = dataclasses.replace(
        cfg, config_path=str(Path(path).resolve()) if path else None,
        database=dataclasses.replace(cfg.database, url=absolute_sqlite_url(cfg.database.url, base)),
        ingest=dataclasses.replace(cfg.ingest, socket=resolve_path(cfg.ingest.socket, base)),
        webhooks=dataclasses.replace(cfg.webhooks, subscriptions=tuple(
            dataclasses.replace(s, ca_file=resolve_path(s.ca_file, base)) for s in cfg.webhooks.subscriptions)))
    for i, sub in enumerate(cfg.webhooks.subscriptions):
        if not sub.ca_file:
            continue
        try:
            pem = Path(sub.ca_file).read_bytes()
        except OSError as e:
            raise ConfigError(f"webhooks.subscriptions[{i}].ca_file: cannot read {sub.ca_file}: {e.strerror}") from None
        if b"-----BEGIN CERTIFICATE-----" not in pem:
            raise ConfigError(f"webhooks.subscriptions[{i}].ca_file: no PEM certificate in {sub.ca_file}")
    return cfg


def resolve_path(value: str, base: Path) -> str:
    """Relative paths are relative to the config file's directory (or the working directory
    without a file), made absolute at load time: pipe(8) runs the ingester in Postfix's queue
    directory, where a relative path would point somewhere else."""
    if not value or os.path.isabs(value):
        return value
    return str(base / value)


def absolute_sqlite_url(url: str, base: Path) -> str:
    prefix = next((p for p in ("sqlite:///", "sqlite+pysqlite:///") if url.startswith(p)), None)
    if prefix is None:
        return url
    rest = url[len(prefix):]
    if not rest or rest.startswith("/") or rest.startswith(":memory:"):
        return url
    return prefix + resolve_path(rest, base)


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
