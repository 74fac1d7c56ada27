"""What a parsed message says, turned into findings to record: pure, no database.

:func:`derive` maps a :class:`~sidecar.bounce.parse.results.ParsedMessage` (and the VERP token of the
envelope) to one :class:`Finding` per recipient; :mod:`sidecar.bounce.record` writes them.

The results of recording are str enums whose values are what the database stores (and the API
shows): :class:`MessageState` (``raw_messages.state``), :class:`EventKind` (``events.kind``) and
:class:`Decision` (``events.decision``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from sidecar.bounce.envelope import Envelope
from sidecar.bounce.parse.dsn import usable
from sidecar.bounce.parse.results import Category, Kind
from sidecar.suppression.address import AddressError

if TYPE_CHECKING:
    from sidecar.bounce.trust import Standing

log = logging.getLogger("sidecar.bounce")


class MessageState(StrEnum):
    """What became of one message: ``raw_messages.state``, and the outcome of recording it."""

    PARSED = "parsed"
    UNPARSED = "unparsed"  # kept for replay: a report without recipients, a parser error, truncated
    NOT_BOUNCE = "not-bounce"
    BAD_VERP = "bad-verp"
    DUPLICATE = "duplicate"  # an outcome only (already stored): never a stored state


class EventKind(StrEnum):
    """``events.kind`` of what the ingester records."""

    BOUNCE = "bounce"
    DELAY = "delay"
    COMPLAINT = "complaint"
    AUTO_REPLY = "auto-reply"
    DELIVERED = "delivered"
    CAP_REACHED = "cap-reached"  # a per-message cap was hit (no address; counts in the diagnostic)


class Decision(StrEnum):
    """``events.decision``: what became of one finding. Stored as is, or followed by the notes of
    the suppression step in parentheses, e.g. ``suppress-hard (covered)``."""

    RECORD = "record"  # event only
    DELAY = "delay"
    BLOCK = "block"
    SOFT = "soft"  # a soft bounce, counted towards ingest.soft_threshold
    SUPPRESS_HARD = "suppress-hard"
    SUPPRESS_SOFT = "suppress-soft"
    SUPPRESS_COMPLAINT = "suppress-complaint"
    BAD_VERP = "bad-verp"  # the message's VERP token was invalid: nothing acted on
    # withheld by the trust gate (sidecar.bounce.trust)
    UNVERIFIED = "unverified"
    UNCORROBORATED = "uncorroborated"
    NO_TENANT = "no-tenant"
    SUPERSEDED = "superseded"  # replaced by a replay (kept for history)
    CAP_REACHED = "cap-reached"  # the cap-reached event's decision


@dataclass(frozen=True, slots=True)
class Finding:
    """One event to record, derived from a parse result (and VERP data)."""

    address: str
    tenant: str
    kind: EventKind  # never CAP_REACHED
    category: str | None
    reason: str | None
    hard: bool | None
    status: str | None = None
    action: str | None = None
    remote_mta: str | None = None
    diagnostic: str | None = None

    def key(self) -> tuple[Any, ...]:
        return (self.address, self.tenant, self.kind, self.category, self.hard, self.status)


@dataclass
class Derived:
    state: MessageState  # never DUPLICATE
    kind: Kind | None  # the parsed message's kind (raw_messages.kind); None when not parsed
    findings: list[Finding] = field(default_factory=list)
    error: str | None = None
    parser_version: str | None = None
    verified: bool = False  # a valid VERP token named the recipient
    dropped: int = 0  # recipients beyond ingest.max_failed_recipients: counted, not recorded
    feedback_loop: bool = False  # came from a configured feedback-loop source (set by the Recorder)
    standings: dict[str, Standing] | None = None  # our data on each address (set by the Recorder)


@dataclass
class Outcome:
    outcome: MessageState
    message_id: int | None
    recipients: int = 0
    suppressions: int = 0
    decisions: list[tuple[str, str]] = field(default_factory=list)  # (address, decision as stored)

    def summary(self) -> str:
        return f"{self.outcome} id={self.message_id} recipients={self.recipients} suppressions={self.suppressions}"


def _verp(key: str, token: str) -> tuple[Any, str | None]:
    """(VerpData or None, error or None) for the ``${extension}`` token."""
    if not key or not token:
        return None, None
    from sidecar.bounce.verp import BadVerpToken, parse_verp_token

    try:
        return parse_verp_token(key.encode("utf-8"), token), None
    except BadVerpToken as e:
        return None, f"bad VERP token: {e}"


def _enclosed_verp(key: str, sender: str | None) -> Any:
    """VerpData of a valid token in the enclosed original's envelope sender (``local+TOKEN@domain``,
    e.g. in a feedback report sent to a fixed address), else None. Signed, so it may be trusted
    wherever it appears; a bad one is only ignored (the message did not come to that address)."""
    local = (sender or "").strip().strip("<>").rpartition("@")[0]
    if not key or "+" not in local:
        return None
    verp, error = _verp(key, local.split("+", 1)[1])
    return verp if error is None else None


_REPORT = re.compile(
    rb"^content-type:[ \t]*(?:multipart/report|message/(?:delivery-status|feedback-report))", re.I | re.M
)


def looks_like_report(raw: bytes) -> bool:
    """A MIME report (DSN, ARF) by its content type: worth keeping as "unparsed" for replay."""
    return _REPORT.search(raw[:262144]) is not None


def _sent_to(r: Any) -> str:
    """The address we sent to, which is what a suppression must name (the policy server checks
    RCPT addresses): a DSN's Original-Recipient (the ORCPT our relay passed, or the address
    before our own rewriting) when it names another mailbox than the Final-Recipient the
    reporting MTA tried (an alias, a forward); else the address the report gives."""
    original = getattr(r, "original_recipient", None)
    return original if original and usable(original) else r.address


def derive(
    parsed: Any,
    env: Envelope,
    verp_key: str,
    canonical: Callable[[str], str],
    raw: bytes = b"",
    max_recipients: int | None = None,
) -> Derived:
    """Turn a ParsedMessage into what gets recorded. Pure: no database.

    The VERP token is the envelope's (``${extension}``) or, without one, a valid token in the
    enclosed original's envelope sender. The tenant is the token's, or none: nothing else the
    message says (its enclosed ``Return-Path``, its ``From``) names a tenant. Past
    ``max_recipients`` recipients are only counted.
    """
    kind: Kind = parsed.kind
    verp, verp_error = _verp(verp_key, env.extension)
    if verp is None and verp_error is None:
        verp = _enclosed_verp(verp_key, parsed.original_envelope_from)
    recipients = list(parsed.recipients)
    if verp is not None:
        # Our own envelope data beats what a remote MTA wrote: VERP mail has one recipient.
        want = verp.recipient.lower()
        same = [r for r in recipients if want in ((r.address or "").lower(), _sent_to(r).lower())]
        recipients = same or recipients[:1]
    dropped = 0
    if max_recipients is not None and len(recipients) > max_recipients:
        dropped = len(recipients) - max_recipients
        recipients = recipients[:max_recipients]
    if verp is None:  # the parser's own bound (a hostile message): those were named too, only counted
        dropped += int(getattr(parsed, "recipients_omitted", 0) or 0)
    tenant = verp.tenant if verp is not None and verp.tenant else ""
    findings = []
    for r in recipients:
        candidates = [verp.recipient] if verp is not None else list(dict.fromkeys((_sent_to(r), r.address)))
        address = ""
        for candidate in candidates:  # the address we sent to; the reported one if that is unusable
            try:
                address = canonical(candidate)
                break
            except AddressError:
                log.info("ignoring unusable address %r", candidate)
        if not address:
            continue
        action = (r.action or "").lower() or None
        category = r.category.value if r.category is not None else None
        if kind == Kind.DELAY or action == "delayed":
            fkind = EventKind.DELAY
        elif kind in (Kind.COMPLAINT, Kind.AUTO_REPLY, Kind.DELIVERED):
            fkind = EventKind(kind.value)
        elif category in (Category.COMPLAINT, Category.AUTO_REPLY):
            fkind = EventKind(category)
        elif action in ("delivered", "relayed", "expanded"):
            fkind = EventKind.DELIVERED
        else:
            fkind = EventKind.BOUNCE
        findings.append(
            Finding(
                address=address,
                tenant=tenant,
                kind=fkind,
                category=category,
                reason=r.reason,
                hard=r.hard,
                status=r.status,
                action=action,
                remote_mta=r.remote_mta,
                diagnostic=(r.diagnostic or None),
            )
        )
    if verp_error:
        return Derived(MessageState.BAD_VERP, kind, findings, verp_error, dropped=dropped)
    if kind == Kind.NOT_BOUNCE and not findings and not looks_like_report(raw):
        return Derived(MessageState.NOT_BOUNCE, kind, [])
    if not findings:
        return Derived(MessageState.UNPARSED, kind, [], "no recipients found", dropped=dropped)
    return Derived(MessageState.PARSED, kind, findings, verified=verp is not None, dropped=dropped)


def derive_raw(
    raw: bytes,
    env: Envelope,
    verp_key: str,
    canonical: Callable[[str], str],
    parse: Callable[[bytes], Any] | None = None,
    max_recipients: int | None = None,
) -> Derived:
    if env.truncated:
        return Derived(
            MessageState.UNPARSED,
            None,
            [],
            f"truncated: message of {env.size} bytes is larger than "
            f"ingest.max_message_size, first {len(raw)} bytes kept",
        )
    from sidecar.bounce import parse as parser

    parsed = (parse or parser.parse_message)(raw)  # a crash here propagates: tempfail, retried
    d = derive(parsed, env, verp_key, canonical, raw, max_recipients)
    d.parser_version = getattr(parser, "PARSER_VERSION", None)
    return d
