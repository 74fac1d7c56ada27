"""Entry point: raw message bytes -> :class:`ParsedMessage`.

Exact signal first, heuristics last: ARF feedback reports, RFC 3464 fields (in a
message/delivery-status part or, failing that, in the text), provider JSON notifications,
auto-reply markers, then bounce texts, and flufl.bounce only when nothing cheaper found a
recipient (on a prefix of the message only).

Every stage is bounded in size, and the whole parse by a deadline checked between stages
(:mod:`sidecar.bounce.parse.budget`): a hostile message gets what was found before a limit, and
``ParsedMessage.limits`` says which limits it hit.
"""

from __future__ import annotations

import dataclasses
import email.errors
import time
from collections.abc import Callable
from email.message import Message

from sidecar.bounce.parse import arf, detect, dsn, mime, notifications, reporting_mta, textbounce
from sidecar.bounce.parse.budget import MAX_RECIPIENTS, MAX_SCAN, Budget, split_long_lines
from sidecar.bounce.parse.classify import classify
from sidecar.bounce.parse.fallback import from_flufl
from sidecar.bounce.parse.results import Category, FailedRecipient, Kind, Limit, ParsedMessage
from sidecar.bounce.parse.status import RETURNED
from sidecar.bounce.parse.text_verdicts import from_text, list_refusals

PARSER_VERSION = "1.4.0"

_NOT_FAILED = frozenset({"delivered", "relayed", "expanded", "deliverable"})
_DATA_ERRORS = (ValueError, LookupError, UnicodeError, IndexError, email.errors.MessageError, RecursionError)


def parse_bytes(raw: bytes) -> list[dict]:
    """Failed recipients as JSON-ready dicts (for the evaluation tool)."""
    return [r.to_json() for r in parse_message(raw).recipients]


def parse_message(raw: bytes, clock: Callable[[], float] = time.monotonic) -> ParsedMessage:
    """Parse one message; never raises on bad input, and stays within its budgets.

    ``clock`` (seconds) times the deadline; the result's ``limits`` names the budgets hit,
    ``recipients_omitted`` the recipients beyond ``MAX_RECIPIENTS``.
    """
    if not raw or raw.isspace():  # (not raw.strip(): a copy of the whole message)
        return ParsedMessage(Kind.NOT_BOUNCE, [])
    budget = Budget(clock)
    try:
        parsed = _parse(mime.parse_bytes(raw, budget), raw, budget)
    except _DATA_ERRORS:
        parsed = ParsedMessage(Kind.NOT_BOUNCE, [])
    return _bounded(parsed, budget)


def _bounded(parsed: ParsedMessage, budget: Budget) -> ParsedMessage:
    """At most ``MAX_RECIPIENTS`` recipients, and the limits the parse hit."""
    if len(parsed.recipients) > MAX_RECIPIENTS:
        budget.omit(len(parsed.recipients) - MAX_RECIPIENTS)
        parsed = dataclasses.replace(parsed, recipients=parsed.recipients[:MAX_RECIPIENTS])
    if not budget.limits:
        return parsed
    return dataclasses.replace(parsed, limits=frozenset(budget.limits), recipients_omitted=budget.omitted)


def _text(parts: mime.Parts, budget: Budget) -> str:
    """The report's text: the first three text parts, ``MAX_SCAN`` characters."""
    text = "\n\n".join(mime.part_text(p, budget=budget) for p in parts.texts[:3])
    if len(text) > MAX_SCAN:
        text = text[:MAX_SCAN]
        budget.hit(Limit.SCAN_BYTES)
    return text


def _short_lines(text: str, budget: Budget) -> str:
    """``text`` with no line over ``MAX_LINE`` (for the pattern scans; the field and JSON
    parsers read the text as it is: cutting a line could cut a value)."""
    text, cut = split_long_lines(text)
    if cut:
        budget.hit(Limit.LINE_LENGTH)
    return text


def _parse(msg: Message, raw: bytes, budget: Budget) -> ParsedMessage:
    parts = mime.collect_parts(msg, budget)
    if budget.expired():
        return ParsedMessage(Kind.NOT_BOUNCE, [])
    original = parts.original
    message_id = mime.header(original, "Message-ID") or None if original is not None else None
    envelope_from = None
    if original is not None:
        envelope_from = dsn.address_value(mime.header(original, "Return-Path")) or None

    def result(
        kind: Kind, recipients: list[FailedRecipient], mta: str | None = None, sender: str | None = None
    ) -> ParsedMessage:
        return ParsedMessage(kind, recipients, mta, message_id, sender or envelope_from)

    for report in parts.feedback_report:
        complaints = arf.parse_feedback_report(report, original, budget)
        return result(Kind.COMPLAINT, complaints)

    if detect.is_read_receipt(msg, parts.disposition):
        return result(Kind.NOT_BOUNCE, [])  # an RFC 8098 MDN: its Final-Recipient did not fail

    whole_text = _text(parts, budget)
    text = _short_lines(whole_text, budget)
    report_fields = None
    for part in parts.delivery_status:
        report_fields = dsn.parse_fields(mime.fields_text(part, budget), budget)
        if report_fields:
            break
    if report_fields is None and "recipient:" in whole_text.lower():
        report_fields = dsn.parse_fields(whole_text, budget)
    if budget.expired():
        return result(Kind.NOT_BOUNCE, [])
    if report_fields is not None:
        return _from_dsn(report_fields, text, result, msg, reporting_mta.detect(msg), budget)

    nonstandard = arf.parse_nonstandard_complaint(msg, original)
    if nonstandard is not None:
        return result(Kind.COMPLAINT, nonstandard)

    events = notifications.ses_events(whole_text)
    if events is not None:
        budget.omit(len(events) - MAX_RECIPIENTS)
        return _from_json(events[:MAX_RECIPIENTS], result)

    if detect.is_vendor_auto_reply(msg):
        return result(Kind.AUTO_REPLY, _auto_reply(msg))
    if detect.is_challenge(msg, text) or detect.is_forwarding_notice(textbounce.report_section(text)):
        return result(Kind.NOT_BOUNCE, [])
    family = reporting_mta.detect(msg)
    if family == "fml":
        refused = list_refusals(text, budget)
        if refused:
            return result(Kind.BOUNCE, _sourced(refused, "text:fml-refusals"))
    bounce_like = detect.looks_like_bounce(msg, text)
    if not bounce_like:
        if detect.is_auto_reply(msg, text):
            return result(Kind.AUTO_REPLY, _auto_reply(msg))
        return result(Kind.NOT_BOUNCE, [])

    if budget.expired():
        return result(Kind.NOT_BOUNCE, [])
    found = _not_message_ids(from_text(msg, text, original, family, budget), msg, original)
    if found:
        found = [
            dataclasses.replace(r, address_source=textbounce.address_source(text, r.address, original)) for r in found
        ]
    elif not budget.expired():
        found = _sourced(_not_message_ids(from_flufl(raw, budget), msg, original), "flufl.bounce")
    if not found:
        return result(Kind.NOT_BOUNCE, [])
    if detect.is_delay_warning(msg, text):
        # a warning that delivery is still being retried: its recipients are delayed, never failed
        found = [dataclasses.replace(r, action="delayed", hard=False) for r in found]
    kind = Kind.DELAY if all(r.action == "delayed" for r in found) else Kind.BOUNCE
    return result(kind, found)


def _not_message_ids(found: list[FailedRecipient], msg: Message, original: Message | None) -> list[FailedRecipient]:
    """Without the Message-IDs the bounce and its original carry (an ID looks like an address)."""
    if not found:
        return found
    ids: set[str] = set()
    for part, names in ((msg, ("Message-ID", "In-Reply-To", "References")), (original, ("Message-ID",))):
        if part is None:
            continue
        for name in names:
            ids.update(a for a in (dsn.address_value(v) for v in mime.header(part, name).split()) if a)
    return [r for r in found if r.address not in ids] if ids else found


def _sourced(recipients: list[FailedRecipient], source: str) -> list[FailedRecipient]:
    return [dataclasses.replace(r, address_source=source) for r in recipients]


def _auto_reply(msg: Message) -> list[FailedRecipient]:
    """The auto-reply's author (recorded, never suppressed)."""
    addr = detect.auto_reply_address(msg)
    if not addr:
        return []
    subject = mime.header(msg, "Subject") or None
    return [
        FailedRecipient(
            addr, Category.AUTO_REPLY, "vacation", None, None, None, None, subject, address_source="header:from"
        )
    ]


def _failed_header(msg: Message) -> list[str]:
    """Exim's ``X-Failed-Recipients`` (and the like): the addresses as the sender wrote them."""
    value = mime.header(msg, "X-Failed-Recipients") or mime.header(msg, "X-Failed-Recipient")
    return [a for a in (dsn.address_value(p) for p in value.split(",")) if a and dsn.usable(a)]


def _from_dsn(
    report: dsn.DsnReport, text: str, result, msg: Message, family: str | None, budget: Budget
) -> ParsedMessage:
    failed_header = _failed_header(msg)
    report_text = textbounce.report_section(text) if text else ""
    lower = report_text.lower()
    global_command = textbounce.smtp_command(report_text) if report_text else None

    def whole_lower() -> str:
        return " ".join(text[:4000].lower().split())

    failed: list[FailedRecipient] = []
    delivered: list[FailedRecipient] = []
    warning: bool | None = None  # a delay warning's wording: only read for a block without Action
    # the n-th mailbox path or pipe of the report, by identity (list.index() compared each
    # recipient field by field: quadratic, and it took equal blocks for the first one)
    paths = {
        id(r): n
        for n, r in enumerate(r for r in report.recipients if not dsn.usable(r.final_recipient or r.original_recipient))
    }
    for n, r in enumerate(report.recipients):
        if n % 16 == 15 and budget.expired():
            budget.omit(len(report.recipients) - n)  # what was read so far (the deadline is noted)
            break
        address = r.final_recipient or r.original_recipient
        source = r.source if r.final_recipient else "dsn:original-recipient"
        if not dsn.usable(address) and failed_header and len(failed_header) == len(paths):
            address = failed_header[paths[id(r)]]  # a mailbox path or pipe: the address it was for
            source = "header:x-failed-recipients"
        if not address:
            continue
        if r.action in _NOT_FAILED or (r.status or "").startswith("2."):
            delivered.append(_delivered(address, r.status, r.remote_mta, r.diagnostic, r.original_recipient, source))
            continue
        action = r.action
        if not action:
            if warning is None:
                warning = detect.is_delay_warning(msg, report_text or text)
            action = "delayed" if warning else None
        diagnostic = r.diagnostic
        context = _context(report_text, lower, address)
        if not diagnostic and not context and len(report.recipients) == 1:
            context = " ".join(report_text.split())[:2000]
        command = (textbounce.smtp_command(context) if context else None) or global_command
        said = diagnostic or context
        explicit = reporting_mta.family_reason(family, " ".join(said.lower().split()), msg) if family and said else None
        if family and explicit is None and not diagnostic and len(report.recipients) == 1:
            explicit = reporting_mta.family_reason(family, whole_lower(), msg)  # the family's sentence anywhere
        verdict = classify(
            r.status,
            said,
            action,
            command,
            r.diagnostic_type,
            explicit,
            r.remote_mta,
            family not in reporting_mta.NO_SESSION,
            report.reporting_mta,
            r.status_comment,
        )
        failed.append(
            FailedRecipient(
                address=address,
                category=verdict.category,
                reason=verdict.reason,
                status=verdict.status or (RETURNED if (action or "failed") == "failed" else None),
                action=action or "failed",
                hard=False if action == "delayed" else verdict.hard,
                remote_mta=r.remote_mta,
                diagnostic=diagnostic or context or None,
                original_recipient=r.original_recipient,
                evidence=verdict.evidence,
                address_source=source,
            )
        )
    if not failed:
        # a success DSN reports its delivered recipients (reason "delivered", never suppressed)
        kind = Kind.DELIVERED if delivered else Kind.NOT_BOUNCE
        failed = delivered
    elif all(f.action == "delayed" for f in failed):
        kind = Kind.DELAY
    else:
        kind = Kind.BOUNCE
    return result(kind, failed, report.reporting_mta, report.envelope_from)


def _delivered(
    address: str,
    status: str | None,
    remote_mta: str | None = None,
    diagnostic: str | None = None,
    original: str | None = None,
    source: str | None = None,
) -> FailedRecipient:
    """A recipient of a success DSN: reported, not failed."""
    return FailedRecipient(
        address,
        Category.UNKNOWN,
        "delivered",
        None,
        status,
        "delivered",
        remote_mta,
        diagnostic,
        original,
        address_source=source,
    )


def _context(text: str, lower: str, address: str) -> str:
    """The notification text block about ``address`` (empty if not mentioned)."""
    pos = lower.find(address)
    if pos < 0:
        return ""
    start = lower.rfind("\n\n", 0, pos) + 1
    end = lower.find("\n\n", pos)
    return " ".join(text[start : end if end > 0 else len(text)].split())[:2000]


_JSON_SOURCE = "json:ses-recipients"


def _from_json(events: list[notifications.JsonEvent], result) -> ParsedMessage:
    out: list[FailedRecipient] = []
    delivered: list[FailedRecipient] = []
    kind = Kind.NOT_BOUNCE
    for e in events:
        if e.kind == "complaint":
            kind = Kind.COMPLAINT
            out.append(
                FailedRecipient(
                    e.address,
                    Category.COMPLAINT,
                    "feedback",
                    None,
                    None,
                    None,
                    None,
                    None,
                    feedback_type=e.feedback_type,
                    address_source=_JSON_SOURCE,
                )
            )
        elif e.kind == "bounce":
            kind = Kind.BOUNCE
            v = classify(dsn.status_code(e.status), e.diagnostic, e.action)
            out.append(
                FailedRecipient(
                    e.address,
                    v.category,
                    v.reason,
                    v.hard,
                    v.status,
                    e.action,
                    None,
                    e.diagnostic,
                    evidence=v.evidence,
                    address_source=_JSON_SOURCE,
                )
            )
        else:
            status = dsn.status_code(e.status) or e.status
            delivered.append(_delivered(e.address, status, None, e.diagnostic, source=_JSON_SOURCE))
            if kind is Kind.NOT_BOUNCE:
                kind = Kind.DELIVERED
    return result(kind, delivered if kind is Kind.DELIVERED else out)
