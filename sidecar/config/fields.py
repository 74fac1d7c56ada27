"""Field validators of the configuration: each turns a raw TOML value into the checked value or raises
ValueError with a one-line message (the loader puts the key path in front of it)."""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from dataclasses import field
from typing import Any
from urllib.parse import urlsplit

from sidecar.postfix_config import ACTION, TemplateError, postfix_default_action
from sidecar.units import parse_duration

DEFAULT_DATA_DIR = "var"


class ConfigError(ValueError):
    """A configuration problem; the message starts with the key path."""


def positive_duration(value: object) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError('expected a positive duration like "5s"')
    return seconds


def opt(
    default: Any = dataclasses.MISSING,
    *,
    parse: Any = None,
    choices: tuple[str, ...] | None = None,
    doc: str = "",
    factory: Any = dataclasses.MISSING,
) -> Any:
    meta = {"parse": parse, "choices": choices, "doc": doc}
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


RATE_KEYS = ("sasl_username", "sender", "sender_domain", "client_address", "recipient_domain")


def access_action(value: object) -> str:
    if not isinstance(value, str) or not ACTION.match(value) or "\n" in value:
        raise ValueError("expected a Postfix access(5) action such as DUNNO, DEFER_IF_PERMIT ... or 451 4.3.5 ...")
    return value


def postfix_action(value: object) -> str:
    """``postfix.default_action``: ``fail-open``, ``fail-closed`` or an action that ``postfix-config`` renders."""
    if not isinstance(value, str) or "\n" in value:
        raise ValueError("expected fail-open, fail-closed or a Postfix action such as DUNNO or 451 4.3.5 ...")
    try:
        rendered = postfix_default_action(value)
    except TemplateError:
        raise ValueError("expected fail-open, fail-closed or a Postfix action such as DUNNO or 451 4.3.5 ...") from None
    return value.strip().lower() if rendered != " ".join(value.split()) else value  # an alias: its usual spelling


def endpoint(value: object) -> str:
    if not isinstance(value, str) or not re.match(r"^(tcp6?|unix|ssl|systemd):", value):
        raise ValueError('expected a Twisted endpoint like "tcp:10031:interface=127.0.0.1" or "unix:/run/sidecar.sock"')
    return value


def db_url(value: object) -> str:
    if not isinstance(value, str) or "://" not in value:
        raise ValueError('expected a database URL like "sqlite:///var/sidecar.db" or "postgresql+psycopg://..."')
    return value


def positive_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError("expected a positive integer")
    return value


def non_negative_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError("expected a non-negative integer")
    return value


def address_pattern(value: object) -> str:
    if not isinstance(value, str) or "@" not in value or value.count("@") > 1:
        raise ValueError('expected an address "user@example.com" or a domain "@example.com"')
    return value.strip().lower()


def exemption(value: object) -> str:
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


def mailbox(value: object) -> str:
    if (
        not isinstance(value, str)
        or value.count("@") != 1
        or value.startswith("@")
        or value.endswith("@")
        or any(c.isspace() for c in value)
    ):
        raise ValueError('expected an address like "fbl-yahoo@bounce.example.com"')
    return value.strip().lower()


def domain_name(value: object) -> str:
    if not isinstance(value, str) or "@" in value or any(c.isspace() for c in value):
        raise ValueError('expected a domain like "yahoo.com" (or "" for any)')
    return value.strip().strip(".").lower()


def probability(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ValueError("expected a number between 0 and 1, like 1e-6")
    return float(value)


def token_scope(value: object) -> str:
    if value not in ("read", "write"):
        raise ValueError("expected read or write")
    return str(value)


def sha256_hex(value: object) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", value):
        raise ValueError("expected 64 hex digits (the SHA-256 of the token)")
    return value.lower()


def http_url(value: object) -> str:
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


WEBHOOK_EVENTS = (
    "bounce.recorded",
    "complaint.recorded",
    "suppression.added",
    "suppression.removed",
    "ratelimit.exceeded",
    "domain.check_changed",
    "reputation.level_changed",
    "reputation.released",
)


def event_name(value: object) -> str:
    if value not in WEBHOOK_EVENTS:
        raise ValueError(f"expected one of {', '.join(WEBHOOK_EVENTS)}")
    return str(value)


def ip_address(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError('expected an IP address like "192.0.2.10"')
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address") from None


def nameserver(value: object) -> tuple[str, int]:
    """A DNS server: ``IP``, ``IP:PORT`` or ``[IPv6]:PORT`` -> (ip, port)."""
    text = value.strip() if isinstance(value, str) else ""
    host, port = text, "53"
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest and not rest.startswith(":"):
            host = ""
        port = rest[1:] or "53"
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{value!r}: expected an IP address, IP:PORT or [IPv6]:PORT (not a name)") from None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r}: expected a port from 1 to 65535")
    return host, int(port)


def dns_server(value: object) -> str:
    nameserver(value)
    return str(value).strip()


def host_name(value: object) -> str:
    """A DNS name (a domain, a zone, a HELO name): letters, digits, '-', '_' and dots."""
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)+\.?", value.strip()):
        raise ValueError(f'{value!r} is not a domain name like "example.com"')
    return value.strip().rstrip(".").lower()


def host_name_or_empty(value: object) -> str:
    return "" if value == "" else host_name(value)


def lmtp_listen(value: object) -> str:
    """``ingest.lmtp``: empty (off), a unix socket path, or a loopback TCP listener
    ``tcp:PORT:interface=127.0.0.1`` (``tcp6:PORT:interface=\\:\\:1``)."""
    if not isinstance(value, str) or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError('expected a unix socket path or "tcp:PORT:interface=127.0.0.1"')
    if not value.startswith(("tcp:", "tcp6:")):
        if value.startswith(("unix:", "ssl:", "systemd:")):
            raise ValueError('expected a plain unix socket path (no "unix:") or "tcp:PORT:interface=127.0.0.1"')
        return value
    kind, _, rest = value.partition(":")
    parts = re.split(r"(?<!\\):", rest)
    named = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
    port = parts[0]
    if not port.isdigit() or not 0 < int(port) < 65536 or set(named) - {"interface", "backlog"}:
        raise ValueError(f'expected "{kind}:PORT:interface=ADDRESS" with a port 1-65535')
    try:
        host = ipaddress.ip_address(named.get("interface", "").replace("\\:", ":"))
    except ValueError:
        raise ValueError("the TCP listener needs interface= set to a loopback address") from None
    if not host.is_loopback:
        raise ValueError(f"interface {host} is not a loopback address: bounces would be open to forgery")
    return value


def delimiter_chars(value: object) -> str:
    """``ingest.recipient_delimiter``: Postfix's recipient_delimiter (each character is one)."""
    if not isinstance(value, str) or len(value) > 8 or any(c.isalnum() or c.isspace() or c == "@" for c in value):
        raise ValueError('expected up to 8 delimiter characters like "+" (no letters, digits, spaces or @)')
    return value
