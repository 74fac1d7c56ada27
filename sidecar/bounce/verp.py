"""VERP senders with HMAC-signed tokens.

An application sends with an envelope sender such as ``bounces+TOKEN@bounce.example.com``.
With Postfix's ``recipient_delimiter = +`` the pipe(8) transport hands ``${extension}`` =
TOKEN to the bounce ingester, which gets the original recipient (and tenant) back from the
token without trusting anything the remote MTA wrote.

Token layout (before encoding)::

    version(1) | len(tenant)(1) | tenant | recipient | hmac-sha256(key, previous bytes)[:10]

encoded with lower-case base32 without padding, so that it survives case-folding MTAs and
only uses characters that are valid in an unquoted local part.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass

VERSION = 1
SIGNATURE_BYTES = 10  # 80-bit truncated HMAC-SHA256
MAX_LOCAL_PART = 64  # RFC 5321 limit; longer tokens still work with most MTAs


class BadVerpToken(ValueError):
    """The token is malformed or its signature does not match."""


@dataclass(frozen=True, slots=True)
class VerpData:
    recipient: str
    tenant: str | None


def _sign(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, payload, hashlib.sha256).digest()[:SIGNATURE_BYTES]


def make_verp_token(key: bytes, recipient: str, tenant: str | None = None) -> str:
    """Return the signed token for ``recipient`` (lower-cased) and optional ``tenant``."""
    tenant_b = (tenant or "").encode("utf-8")
    if len(tenant_b) > 255:
        raise ValueError("tenant is longer than 255 bytes")
    payload = bytes([VERSION, len(tenant_b)]) + tenant_b + recipient.strip().lower().encode("utf-8")
    raw = payload + _sign(key, payload)
    return base64.b32encode(raw).decode("ascii").rstrip("=").lower()


def make_verp_sender(key: bytes, recipient: str, bounce_address: str, tenant: str | None = None) -> str:
    """Build ``local+TOKEN@domain`` from ``bounce_address`` (``local@domain``)."""
    local, sep, domain = bounce_address.rpartition("@")
    if not sep or not local or not domain:
        raise ValueError(f"bounce_address is not local@domain: {bounce_address!r}")
    return f"{local}+{make_verp_token(key, recipient, tenant)}@{domain}"


def parse_verp_token(key: bytes, token: str) -> VerpData:
    """Check and decode a token made by :func:`make_verp_token`; raise :class:`BadVerpToken`."""
    text = token.strip().upper()
    if not text or len(text) > 1024:
        raise BadVerpToken("empty or oversized token")
    try:
        raw = base64.b32decode(text + "=" * (-len(text) % 8))
    except (binascii.Error, ValueError) as exc:
        raise BadVerpToken(f"not base32: {exc}") from None
    if len(raw) < 2 + SIGNATURE_BYTES:
        raise BadVerpToken("token too short")
    payload, signature = raw[:-SIGNATURE_BYTES], raw[-SIGNATURE_BYTES:]
    if not hmac.compare_digest(signature, _sign(key, payload)):
        raise BadVerpToken("bad signature")
    if payload[0] != VERSION:
        raise BadVerpToken(f"unknown token version {payload[0]}")
    tenant_len = payload[1]
    if 2 + tenant_len > len(payload):
        raise BadVerpToken("truncated tenant")
    try:
        tenant = payload[2 : 2 + tenant_len].decode("utf-8")
        recipient = payload[2 + tenant_len :].decode("utf-8")
    except UnicodeDecodeError:
        raise BadVerpToken("token is not UTF-8") from None
    if "@" not in recipient:
        raise BadVerpToken("recipient is not an address")
    return VerpData(recipient=recipient, tenant=tenant or None)
