"""Tolerant MIME access: parse bytes once, find the parts a bounce parser needs, decode text.

Uses the stdlib parser with the ``compat32`` policy (the fastest one, and the one that never
raises on defects); every decode falls back to latin-1 / replacement characters. Sizes are
bounded (:mod:`sidecar.bounce.parse.budget`): the bytes read, header bytes per block, parts visited,
nesting depth and bytes decoded per part; a cut is noted on the :class:`Budget` passed in.
"""

from __future__ import annotations

import binascii
import quopri
import re
from base64 import b64decode
from dataclasses import dataclass, field
from email.message import Message
from email.parser import Parser
from email.policy import compat32

from sidecar.bounce.parse.budget import (
    MAX_DEPTH,
    MAX_HEADER_BYTES,
    MAX_HEADERS,
    MAX_MESSAGE_BYTES,
    MAX_PARAM_HEADER,
    MAX_PARTS,
    MAX_TEXT,
    Budget,
)
from sidecar.bounce.parse.results import Limit

_STR_PARSER = Parser(policy=compat32)


def parse_bytes(raw: bytes, budget: Budget | None = None) -> Message:
    """Headers parsed, body kept as text: parts are split lazily by :func:`collect_parts`.

    Parsing only the headers avoids the cost of a full MIME parse of the returned original
    message, which a bounce parser never needs beyond its headers. Only the first
    ``MAX_MESSAGE_BYTES`` are read.
    """
    budget = budget or Budget()
    if len(raw) > MAX_MESSAGE_BYTES:
        raw = raw[:MAX_MESSAGE_BYTES]
        budget.hit(Limit.MESSAGE_BYTES)
    return _parse_part(raw.replace(b"\r\n", b"\n").decode("ascii", "surrogateescape"), budget)


def _parse_part(text: str, budget: Budget | None = None) -> Message:
    """Parse the header block of ``text``; the body is attached unparsed."""
    if text.startswith("\n"):
        head, body = "", text[1:]
    else:
        cut = text.find("\n\n", 0, MAX_HEADER_BYTES)
        if cut < 0 and len(text) > MAX_HEADER_BYTES:  # a huge header block: only its start is read
            cut = text.find("\n\n", MAX_HEADER_BYTES)
            end = text.rfind("\n", 0, MAX_HEADER_BYTES)
            head = text[: end + 1 if end > 0 else MAX_HEADER_BYTES]
            body = "" if cut < 0 else text[cut + 2 :]
            if budget is not None:
                budget.hit(Limit.HEADER_BYTES)
        else:
            head, body = (text, "") if cut < 0 else (text[: cut + 1], text[cut + 2 :])
    msg = _parse_head(head)
    headers = msg._headers  # type: ignore[attr-defined]
    cut = len(headers) > MAX_HEADERS
    if cut:
        del headers[MAX_HEADERS:]
    if len(head) > MAX_PARAM_HEADER:
        for i, (name, value) in enumerate(headers):
            if len(value) > MAX_PARAM_HEADER and name.lower() in _PARAM_HEADERS:
                headers[i] = (name, value[:MAX_PARAM_HEADER])  # get_param()/get_boundary() split it
                cut = True
    if cut and budget is not None:
        budget.hit(Limit.HEADER_BYTES)
    msg.set_payload(body)
    return msg


_PARAM_HEADERS = ("content-type", "content-disposition")
_HEADER_LINE = re.compile(r"From |[\041-\071\073-\176]*:|[\t ]")


def _parse_head(head: str) -> Message:
    """The header block as a compat32 :class:`Message`, as the stdlib feedparser builds it.

    A direct split of the lines (the feedparser's line-by-line state machine is the single
    largest cost of parsing a bounce); anything unusual (a bare CR) goes to the stdlib.
    """
    if "\r" in head:
        return _STR_PARSER.parsestr(head, headersonly=True)
    lines = head.split("\n")
    collected: list[str] = []
    for line in lines:
        if not line or not _HEADER_LINE.match(line):
            break  # end of the header block (what follows is body text: ignored here)
        collected.append(line)
    msg = Message(policy=compat32)
    headers: list[tuple[str, str]] = []
    name: str | None = None
    value = ""
    last = len(collected) - 1
    for lineno, line in enumerate(collected):
        if line[0] in " \t":
            if name is not None:
                value += "\n" + line
            continue
        if name is not None:
            headers.append((name, value.rstrip("\r\n")))
            name, value = None, ""
        if line.startswith("From "):
            if lineno == 0:
                msg.set_unixfrom(line)
                continue
            if lineno == last:
                break
            continue
        i = line.find(":")
        if i <= 0:
            continue
        name, value = line[:i], line[i + 1 :].lstrip(" \t")
    if name is not None:
        headers.append((name, value.rstrip("\r\n")))
    msg._headers = headers  # type: ignore[attr-defined]
    return msg


def _first_headers(msg: Message) -> dict[str, tuple[str, str]]:
    """The first value of each header by lower-cased name, built once per message."""
    first = msg.__dict__.get("_first_headers")
    if first is None:
        first = {}
        for k, v in msg._headers:  # type: ignore[attr-defined]
            first.setdefault(k.lower(), (k, v))
        msg.__dict__["_first_headers"] = first
    return first


def has_header(msg: Message, name: str) -> bool:
    return name.lower() in _first_headers(msg)


def header(msg: Message, name: str) -> str:
    """A header as one unfolded str ('' if missing or undecodable)."""
    try:
        found = _first_headers(msg).get(name.lower())
        if found is None:
            return ""
        value = msg.policy.header_fetch_parse(*found)
    except Exception:
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


def payload_bytes(part: Message, limit: int | None = None) -> bytes:
    """The decoded body of a non-multipart part (tolerates broken base64/QP).

    With ``limit``, at least that many bytes (when there are as many), decoded from a prefix
    of the encoded body only: a base64 or quoted-printable bomb is never decoded whole.
    """
    payload = part.get_payload()
    if isinstance(payload, list):
        return b"\n\n".join(sub.as_bytes() if isinstance(sub, Message) else b"" for sub in payload)
    if not isinstance(payload, str):
        return b""
    cte = header(part, "content-transfer-encoding").lower()
    if limit is not None and len(payload) > limit * 3:  # base64: 4 chars (+ line ends) per 3 bytes
        payload = payload[: limit * 3]
        if cte == "base64":
            compact = "".join(payload.split())
            payload = compact[: len(compact) // 4 * 4]
    raw = payload.encode("utf-8", "surrogateescape")
    if cte == "base64":
        try:
            return b64decode(b"".join(raw.split()) + b"===", validate=False)
        except (binascii.Error, ValueError):
            return raw
    if cte == "quoted-printable":
        return quopri.decodestring(raw)
    return raw


def part_text(part: Message, limit: int = MAX_TEXT, budget: Budget | None = None) -> str:
    """Decode a part's body to str using its charset, never raising (the first ``limit`` chars)."""
    data = payload_bytes(part, limit * 2)
    if len(data) > limit * 2:
        data = data[: limit * 2]
        if budget is not None:
            budget.hit(Limit.PART_BYTES)
    cs = _charset(part)
    try:
        text = data.decode(cs)
    except (LookupError, UnicodeDecodeError):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = data.decode("latin-1")
    return text[:limit]


def fields_text(part: Message, budget: Budget | None = None) -> str:
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
    return part_text(part, budget=budget)


@dataclass(slots=True)
class Parts:
    """The parts of a report the parsers look at, collected in one walk."""

    delivery_status: list[Message] = field(default_factory=list)
    feedback_report: list[Message] = field(default_factory=list)
    texts: list[Message] = field(default_factory=list)  # text/plain (and html) of the report
    original: Message | None = None  # enclosed original message or its headers
    disposition: bool = False  # a message/disposition-notification part (an RFC 8098 read receipt)


_ORIGINAL_TYPES = ("message/rfc822", "text/rfc822-headers", "message/rfc822-headers")


def _subparts(part: Message, budget: Budget) -> list[Message]:
    """Split a multipart body on its boundary (tolerates a missing closing boundary)."""
    body = part.get_payload()
    boundary = part.get_boundary()
    if isinstance(body, list):
        return [p for p in body if isinstance(p, Message)]
    if not isinstance(body, str) or not boundary:
        return []
    delimiter = re.compile(r"^--" + re.escape(boundary) + r"(--)?[ \t]*\r?$", re.MULTILINE)
    out: list[Message] = []
    pos = None
    for m in delimiter.finditer(body):
        if pos is not None:
            chunk = body[pos : m.start()]
            out.append(_parse_part(chunk[:-1] if chunk.endswith("\n") else chunk, budget))
        if m.group(1):
            pos = None
            break
        if len(out) >= MAX_PARTS:
            budget.hit(Limit.PARTS)
            pos = None
            break
        pos = m.end() + 1
    if pos is not None and pos < len(body):
        out.append(_parse_part(body[pos:], budget))
    return out


def collect_parts(msg: Message, budget: Budget | None = None) -> Parts:
    """Walk the MIME tree (at most ``MAX_PARTS`` parts, ``MAX_DEPTH`` levels deep)."""
    budget = budget or Budget()
    parts = Parts()
    stack: list[tuple[Message, int]] = [(msg, 0)]
    seen = 0
    while stack and seen < MAX_PARTS:
        part, depth = stack.pop()
        seen += 1
        ctype = part.get_content_type()
        if ctype in ("message/delivery-status", "message/global-delivery-status"):
            parts.delivery_status.append(part)
        elif ctype == "message/feedback-report":
            parts.feedback_report.append(part)
        elif ctype in ("message/disposition-notification", "message/global-disposition-notification"):
            parts.disposition = True
        elif ctype in _ORIGINAL_TYPES:
            if parts.original is None:
                parts.original = _parse_part(part_text(part), budget)
        elif ctype.startswith("multipart/") and depth >= MAX_DEPTH:
            budget.hit(Limit.DEPTH)
        elif ctype.startswith("multipart/"):
            children = _subparts(part, budget)
            if children:
                stack.extend((c, depth + 1) for c in reversed(children))
            elif not parts.texts:
                parts.texts.append(part)  # broken multipart (no boundary): scan the whole body
        elif ctype.startswith("text/") or (ctype == "application/octet-stream" and not parts.texts):
            parts.texts.append(part)
    if stack:
        budget.hit(Limit.PARTS)
    return parts
