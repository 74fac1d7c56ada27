"""Webhook signatures: HMAC-SHA256 over ``"{timestamp}." + body``.

Header: ``Sidecar-Signature: t=1700000000,v1=<hex>``. A receiver recomputes the HMAC with the
subscription's secret, compares in constant time and rejects timestamps older than a few
minutes (replays). Several ``v1=`` values may appear while a secret is being rotated.
"""

from __future__ import annotations

import hashlib
import hmac

HEADER = "Sidecar-Signature"
DEFAULT_TOLERANCE = 300.0


class SignatureError(ValueError):
    """The signature header is missing, malformed, stale or does not match."""


def signature(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode("ascii") + body, hashlib.sha256)
    return mac.hexdigest()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The value of the ``Sidecar-Signature`` header."""
    return f"t={timestamp},v1={signature(secret, timestamp, body)}"


def verify(secret: str, body: bytes, header: str | None, now: float, tolerance: float = DEFAULT_TOLERANCE) -> int:
    """Check ``header`` against ``body``; returns the signed timestamp or raises SignatureError."""
    if not header:
        raise SignatureError("missing signature header")
    ts: int | None = None
    sigs: list[str] = []
    for part in header.split(","):
        k, _, v = part.strip().partition("=")
        if k == "t" and v.isdigit():
            ts = int(v)
        elif k == "v1":
            sigs.append(v)
    if ts is None or not sigs:
        raise SignatureError("malformed signature header")
    if abs(now - ts) > tolerance:
        raise SignatureError("timestamp outside the tolerance (replayed or clock skew)")
    want = signature(secret, ts, body)
    if not any(hmac.compare_digest(want, s) for s in sigs):
        raise SignatureError("signature does not match")
    return ts
