"""Tolerant MIME access: parse bytes once, find the parts a bounce parser needs, decode text.

Uses the stdlib parser with the ``compat32`` policy (the fastest one, and the one that never
raises on defects); every decode falls back to latin-1 / replacement characters.
"""

from __future__ import annotations

import binascii
import quopri
from base64 import b64decode
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32

_PARSER = BytesParser(policy=compat32)

MAX_TEXT = 200_000  # characters of a text part worth scanning for bounce information


def parse_bytes(raw: bytes) -> Message:
    return _PARSER.parsebytes(raw)


def header(msg: Message, name: str) -> str:
    """A header as one unfolded str ('' if missing or undecodable)."""
    try:
        value = msg.get(name)
    except Exception:  # noqa: BLE001 - defective headers must not stop parsing
        return ""
    if value is None:
        return ""
    if not isinstance(value, str):
        value = str(value)
    return " ".join(value.split())


def _charset(part: Message) -> str:
    cs = part.get_param("charset")
    if isinstance(cs, tuple):  # RFC 2231 value
        cs = cs[2]
    cs = (cs or "").strip().strip('"').lower()
    if cs in ("", "us-ascii", "ascii", "unknown-8bit", "x-unknown", "default"):
        return "utf-8"
    return cs


def payload_bytes(part: Message) -> bytes:
    """The decoded body of a non-multipart part (tolerates broken base64/QP)."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return b"\n\n".join(
            sub.as_bytes() if isinstance(sub, Message) else b"" for sub in payload
        )
    if not isinstance(payload, str):
        return b""
    raw = payload.encode("utf-8", "surrogateescape")
    cte = header(part, "content-transfer-encoding").lower()
    if cte == "base64":
        try:
            return b64decode(b"".join(raw.split()) + b"===", validate=False)
        except (binascii.Error, ValueError):
            return raw
    if cte == "quoted-printable":
        return quopri.decodestring(raw)
    return raw


def part_text(part: Message, limit: int = MAX_TEXT) -> str:
    """Decode a part's body to str using its charset, never raising."""
    data = payload_bytes(part)[: limit * 2]
    cs = _charset(part)
    try:
        text = data.decode(cs)
    except (LookupError, UnicodeDecodeError):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = data.decode("latin-1")
    return text[:limit]


def fields_text(part: Message) -> str:
    """Raw text of a message/* part whose body compat32 parsed into header blocks."""
    payload = part.get_payload()
    if isinstance(payload, list):
        blocks = []
        for sub in payload:
            if isinstance(sub, Message):
                lines = [f"{k}: {v}" for k, v in sub.items()]
                body = sub.get_payload()
                if isinstance(body, str) and body.strip():
                    lines.append("")
                    lines.append(body)
                blocks.append("\n".join(lines))
        return "\n\n".join(blocks)
    return part_text(part)


@dataclass(slots=True)
class Parts:
    """The parts of a report the parsers look at, collected in one walk."""

    delivery_status: list[Message] = field(default_factory=list)
    feedback_report: list[Message] = field(default_factory=list)
    texts: list[Message] = field(default_factory=list)  # text/plain (and html) of the report
    original: Message | None = None  # enclosed original message or its headers


_ORIGINAL_TYPES = ("message/rfc822", "text/rfc822-headers", "message/rfc822-headers")


def collect_parts(msg: Message) -> Parts:
    parts = Parts()
    stack: list[Message] = [msg]
    seen = 0
    while stack and seen < 500:
        part = stack.pop()
        seen += 1
        ctype = part.get_content_type()
        if ctype in ("message/delivery-status", "message/global-delivery-status"):
            parts.delivery_status.append(part)
            continue
        if ctype == "message/feedback-report":
            parts.feedback_report.append(part)
            continue
        if ctype in _ORIGINAL_TYPES:
            if parts.original is None:
                parts.original = _enclosed(part)
            continue
        if part.is_multipart():
            payload = part.get_payload()
            if isinstance(payload, list):
                stack.extend(reversed([p for p in payload if isinstance(p, Message)]))
            continue
        if ctype.startswith("text/") or ctype == "application/octet-stream" and not parts.texts:
            parts.texts.append(part)
    if not parts.texts and not parts.delivery_status and isinstance(msg.get_payload(), str):
        parts.texts.append(msg)  # broken multipart (no boundary): scan the whole body
    return parts


def _enclosed(part: Message) -> Message:
    payload = part.get_payload()
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        return payload[0]
    try:
        return parse_bytes(payload_bytes(part))
    except Exception:  # noqa: BLE001
        return Message()
