"""RFC 3464 delivery status notifications: per-message and per-recipient fields.

The fields are read from the text of a ``message/delivery-status`` part or, for MTAs that
put the same fields into a ``text/plain`` body, from that text. Only exact RFC 3464 signal is
extracted here; categorising happens in :mod:`sidecar.bounce.parse.classify`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sidecar.bounce.parse.budget import MAX_FIELD, MAX_RECIPIENTS, Budget
from sidecar.bounce.parse.results import Limit

_FIELD = re.compile(r"^([A-Za-z][A-Za-z0-9-]*)[ \t]*:[ \t]*(.*)$")
_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_ADDR_TYPE = re.compile(r"^\s*(?:rfc822|x-[a-z0-9.-]+|utf-8|unknown)\s*;\s*", re.IGNORECASE)
# "smtp=user@x" (Exchange, SES), "mailto:user@x", "RCPT TO:<user@x>"; repeated ones too
_PREFIX = re.compile(r"^(?:\s*(?:smtp|sip|mailto|rfc822|x400|recipient|rcpt to|to)\s*[=:;])+\s*", re.IGNORECASE)
_ANGLE = re.compile(r"<([^<>]*@[^<>]*)>")  # the first bracketed address (not the last ">")
_QUOTED = re.compile(r'"(?:[^"\\]|\\.){1,64}"@[^\s<>(),;]+')
_TRAILING = ".,;:)]>'\"!?"
_ROUTE = re.compile(r"[;<\s]@[^:\s]{1,255}:")
_RECIPIENT_FIELDS = ("final-recipient", "original-recipient", "x-actual-recipient")


@dataclass(slots=True)
class DsnRecipient:
    final_recipient: str | None
    original_recipient: str | None
    action: str | None
    status: str | None
    remote_mta: str | None
    diagnostic_type: str | None
    diagnostic: str | None
    last_attempt: str | None = None
    status_comment: str | None = None  # "5.2.1 (mailbox disabled, not accepting messages)"
    source: str = "dsn:final-recipient"  # the field the address came from (FailedRecipient.address_source)


@dataclass(slots=True)
class DsnReport:
    reporting_mta: str | None
    envelope_from: str | None  # X-Postfix-Sender and friends
    recipients: list[DsnRecipient]


def _blocks(text: str, budget: Budget | None = None) -> list[dict[str, str]]:
    """Split into blank-line separated blocks of unfolded ``name: value`` fields.

    A value is kept to ``MAX_FIELD`` characters (its continuation lines included).
    """
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last: str | None = None
    for line in text.splitlines():
        if not line.strip():
            if current:
                blocks.append(current)
                current, last = {}, None
            continue
        if line[0] in " \t":
            if last is not None:
                if len(current[last]) < MAX_FIELD:
                    current[last] += " " + line.strip()
                elif budget is not None:
                    budget.hit(Limit.FIELDS)
            continue
        m = _FIELD.match(line)
        if m is None:
            last = None
            continue
        name = m.group(1).lower()
        last = name
        if name in current:  # a repeated recipient field starts a new (unseparated) block
            if name in _RECIPIENT_FIELDS or name == "action":
                blocks.append(current)
                current = {}
            else:
                last = None
                continue
        value = m.group(2).strip()
        if len(value) > MAX_FIELD:
            value = value[:MAX_FIELD]
            if budget is not None:
                budget.hit(Limit.FIELDS)
        current[name] = value
    if current:
        blocks.append(current)
    return blocks


def address_value(value: str | None) -> str | None:
    """``rfc822; <User@Example.COM>`` -> ``user@example.com``.

    Also strips what MTAs and providers put around an address: ``smtp=``, ``mailto:`` and
    ``rfc822;`` prefixes, angle brackets, a source route, a trailing comment or punctuation;
    a quoted local part keeps its quotes (``"john doe"@example.com``).
    """
    if not value:
        return None
    value = _ADDR_TYPE.sub("", value).strip()
    value = _PREFIX.sub("", value)
    angle = _ANGLE.search(value)
    if angle is not None:
        value = angle.group(1)
    value = _PREFIX.sub("", value.strip().strip("<>'` \t"))
    if value.startswith("@") and ":" in value:  # RFC 5321 source route @relay:user@host
        value = value.rsplit(":", 1)[1]
    quoted = _QUOTED.match(value)
    if quoted is not None:
        return quoted.group(0).rstrip(_TRAILING).lower()
    value = value.split()[0] if value.split() else ""
    value = value.lstrip("(['\"").rstrip(_TRAILING)
    return value.replace('"', "").lower() or None


def _usable(address: str) -> bool:
    """A deliverable-looking address (not a mailbox path or a pipe command)."""
    local, at, domain = address.rpartition("@")
    return bool(at and local and domain and not local.startswith(("/", "|")))


def usable(address: str | None) -> bool:
    return bool(address) and _usable(address or "")


def status_code(value: str | None) -> str | None:
    if not value:
        return None
    m = _STATUS.search(value)
    return f"{m.group(1)}.{m.group(2)}.{m.group(3)}" if m else None


def _typed_text(value: str | None) -> tuple[str | None, str | None]:
    """``smtp; 550 ...`` -> (``SMTP``, ``550 ...``)."""
    if not value:
        return None, None
    kind, sep, rest = value.partition(";")
    if sep and re.fullmatch(r"\s*[A-Za-z][A-Za-z0-9-]*\s*", kind):
        return kind.strip().upper(), " ".join(rest.split()) or None
    return None, " ".join(value.split()) or None


def _comment(value: str | None) -> str | None:
    """The parenthesised text after a Status code, if any."""
    if not value or "(" not in value:
        return None
    start = value.find("(")
    end = value.rfind(")")
    return value[start + 1 : end if end > start else None].strip() or None


def parse_fields(text: str, budget: Budget | None = None) -> DsnReport | None:
    """Parse RFC 3464 fields out of ``text``; None if there is no recipient block.

    At most ``MAX_RECIPIENTS`` recipients are read; the blocks naming more are counted on
    ``budget`` (``Budget.omit``).
    """
    reporting_mta = envelope_from = None
    recipients: list[DsnRecipient] = []
    omitted = 0
    for block in _blocks(text, budget):
        if "reporting-mta" in block and reporting_mta is None:
            reporting_mta = _typed_text(block["reporting-mta"])[1]
        for key in ("x-postfix-sender", "x-original-sender", "x-sender"):
            if key in block and envelope_from is None:
                envelope_from = address_value(block[key])
        final = address_value(block.get("final-recipient") or block.get("x-actual-recipient"))
        source = "dsn:final-recipient" if block.get("final-recipient") else "dsn:x-actual-recipient"
        original = address_value(block.get("original-recipient"))
        routed = _ROUTE.search(block.get("final-recipient") or "") is not None  # @relay:user@host
        if original and _usable(original) and (final is None or not _usable(final) or routed):
            final, source = original, "dsn:original-recipient"
        if final is None and original is None:
            continue
        if len(recipients) >= MAX_RECIPIENTS:
            omitted += 1
            continue
        dtype, diagnostic = _typed_text(block.get("diagnostic-code"))
        action = (block.get("action") or "").strip().lower().split(" ")[0] or None
        recipients.append(
            DsnRecipient(
                final_recipient=final,
                original_recipient=original,
                action=action,
                status=status_code(block.get("status")),
                remote_mta=_typed_text(block.get("remote-mta"))[1],
                diagnostic_type=dtype,
                diagnostic=diagnostic,
                last_attempt=block.get("last-attempt-date"),
                status_comment=_comment(block.get("status")),
                source=source,
            )
        )
    if budget is not None:
        budget.omit(omitted)
    if not recipients:
        return None
    return DsnReport(reporting_mta=reporting_mta, envelope_from=envelope_from, recipients=recipients)
