"""Feedback reports (RFC 5965 ARF) and the common non-ARF complaint formats.

A complaint is about the *original recipient* (the person who pressed "this is spam"), not a
delivery failure: the result has reason ``feedback`` and category COMPLAINT, ``hard`` None.
"""

from __future__ import annotations

from email.message import Message

from sidecar.bounce.parse.budget import MAX_FIELD, MAX_RECIPIENTS, Budget
from sidecar.bounce.parse.dsn import address_value
from sidecar.bounce.parse.mime import fields_text, header
from sidecar.bounce.parse.results import Category, FailedRecipient, Limit

_ADDRESS_FIELDS = ("original-rcpt-to", "removal-recipient", "x-original-rcpt-to")
_ORIGINAL_HEADERS = ("X-HmXmrOriginalRecipient", "X-Original-To", "Delivered-To", "To")


def _fields(text: str, budget: Budget | None = None) -> dict[str, list[str]]:
    """``name: [value, ...]``; a value kept to ``MAX_FIELD`` characters."""
    out: dict[str, list[str]] = {}
    last = None
    for line in text.splitlines():
        if line[:1] in (" ", "\t") and last:
            if len(out[last][-1]) < MAX_FIELD:
                out[last][-1] += " " + line.strip()
            elif budget is not None:
                budget.hit(Limit.FIELDS)
            continue
        name, sep, value = line.partition(":")
        if not sep or " " in name.strip() or not name.strip():
            last = None
            continue
        last = name.strip().lower()
        out.setdefault(last, []).append(value.strip()[:MAX_FIELD])
    return out


def _single_address(value: str) -> str | None:
    if not value or "," in value or "@" not in value:
        return None
    return address_value(value)


def original_recipient(original: Message | None) -> str | None:
    """The (single) recipient named in the enclosed original message's headers."""
    if original is None:
        return None
    for name in _ORIGINAL_HEADERS:
        addr = _single_address(header(original, name))
        if addr:
            return addr
    return None


def original_recipient_source(original: Message | None) -> str | None:
    """The ``address_source`` of :func:`original_recipient`: ``returned-message:<header>``."""
    if original is None:
        return None
    for name in _ORIGINAL_HEADERS:
        if _single_address(header(original, name)):
            return "returned-message:" + name.lower()
    return None


def _complaint(
    address: str, feedback_type: str | None, diagnostic: str | None = None, source: str | None = None
) -> FailedRecipient:
    return FailedRecipient(
        address=address,
        category=Category.COMPLAINT,
        reason="feedback",
        hard=None,
        status=None,
        action=None,
        remote_mta=None,
        diagnostic=diagnostic,
        feedback_type=feedback_type,
        address_source=source,
    )


def parse_feedback_report(
    report: Message, original: Message | None, budget: Budget | None = None
) -> list[FailedRecipient]:
    """The complaint's recipients (at most ``MAX_RECIPIENTS``; more are counted on ``budget``)."""
    fields = _fields(fields_text(report, budget), budget)
    ftype = (fields.get("feedback-type") or ["abuse"])[0].lower().split()[0] if fields.get("feedback-type") else "abuse"
    addresses: dict[str, str | None] = {}  # insertion-ordered: address -> its source
    omitted: set[str] = set()
    for name in _ADDRESS_FIELDS:
        for value in fields.get(name, []):
            addr = address_value(value)
            if not addr or "@" not in addr or addr in addresses:
                continue
            if len(addresses) < MAX_RECIPIENTS:
                addresses[addr] = "arf:" + name
            else:
                omitted.add(addr)
    if budget is not None:
        budget.omit(len(omitted))
    if not addresses:
        addr = original_recipient(original)
        if addr:
            addresses[addr] = original_recipient_source(original)
    source_ip = (fields.get("source-ip") or [""])[0]
    return [
        _complaint(a, ftype, f"feedback-type={ftype}" + (f" source-ip={source_ip}" if source_ip else ""), source)
        for a, source in addresses.items()
    ]


def parse_nonstandard_complaint(msg: Message, original: Message | None) -> list[FailedRecipient] | None:
    """Complaint formats without message/feedback-report; None when ``msg`` is not one."""
    if header(msg, "X-Apple-Unsubscribe").lower() == "true":
        addr = _single_address(header(msg, "From"))
        return [_complaint(addr, "opt-out", "unsubscribe request", "header:from")] if addr else []
    subject = header(msg, "Subject").lower()
    if original is not None and ("complaint about message from" in subject or header(msg, "X-HmXmrOriginalRecipient")):
        addr = _single_address(header(original, "X-HmXmrOriginalRecipient"))
        source = "returned-message:x-hmxmroriginalrecipient"
        if not addr:
            addr, source = original_recipient(original), original_recipient_source(original) or ""
        return [_complaint(addr, "abuse", subject or None, source)] if addr else []
    return None
