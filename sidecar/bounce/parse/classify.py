"""Categorise one failed recipient: exact status codes first, diagnostic text next.

Input is what a detector found (DSN status, action, diagnostic text, SMTP command); output is
a sisimai-style reason name, the coarse :class:`Category` and whether the address is
permanently bad (``hard``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from sidecar.bounce.parse.budget import MAX_DIAGNOSTIC
from sidecar.bounce.parse.patterns import first_match
from sidecar.bounce.parse.reasons import decide
from sidecar.bounce.parse.remote_host import remote_reason
from sidecar.bounce.parse.results import Category, Evidence, FailedRecipient
from sidecar.bounce.parse.status import find as find_status
from sidecar.bounce.parse.status import prefer as prefer_status

_REPLY_CODE = re.compile(r"(?<![\d.])[45]\d\d(?=[\s:,-]|$)")
_ADDRESS = re.compile(r"[^\s<>()\[\]\"',;:@]{1,64}@[^\s<>()\[\]\"',;]+")  # bounded: linear
# A reply that echoes the recipient (``550 <rcpt>: ...``) was given at RCPT TO.
# The remote server's name is no wording ("host mx.cloudfilter.example[192.0.2.1] said:").
_REMOTE_HOST = re.compile(
    r"\b(?:host|while talking to) [a-z0-9-]{1,63}(?:\.[a-z0-9-]{1,63}){1,8}\.?(?: ?\[[0-9a-f.:]{1,64}\])?"
)
# a DNS answer that may change: "Host not found, try again" (TRY_AGAIN), SERVFAIL
_DNS_TRY_AGAIN = re.compile(r"not found, try again|temporary (?:lookup |dns )?(?:failure|error)|servfail")
_RCPT_ECHO = re.compile(r"(?<![\d.])[45]\d\d(?:[ :-]+[45]\.\d{1,3}\.\d{1,3})?[ :-]+<[^<>\s@]+@[^<>\s]+>:")

CATEGORY_OF: dict[str, Category] = {
    "userunknown": Category.INVALID_RECIPIENT,
    "hasmoved": Category.INVALID_RECIPIENT,
    "suspend": Category.INVALID_RECIPIENT,
    "mailboxfull": Category.MAILBOX_FULL,
    "hostunknown": Category.DNS,
    "notaccept": Category.DNS,
    "expired": Category.NETWORK,
    "networkerror": Category.NETWORK,
    "systemerror": Category.NETWORK,
    "systemfull": Category.NETWORK,
    "mailererror": Category.NETWORK,
    "failedstarttls": Category.NETWORK,
    "mesgtoobig": Category.MESSAGE_TOO_BIG,
    "exceedlimit": Category.MESSAGE_TOO_BIG,
    "vacation": Category.AUTO_REPLY,
    "feedback": Category.COMPLAINT,
    "syntaxerror": Category.UNKNOWN,
    "undefined": Category.UNKNOWN,
    "onhold": Category.UNKNOWN,
}
_HARD_REASONS = frozenset({"userunknown", "hostunknown", "hasmoved"})


@dataclass(frozen=True, slots=True)
class Verdict:
    reason: str
    category: Category
    hard: bool | None
    status: str | None
    evidence: Evidence | None = None


# While ``recording()`` runs: each verdict's evidence by (diagnostic, reason), for results built
# by a stage that does not carry it on to FailedRecipient.evidence.
_RECORDED: ContextVar[dict[tuple[str | None, str], Evidence] | None] = ContextVar("_RECORDED", default=None)


@contextmanager
def recording() -> Iterator[dict[tuple[str | None, str], Evidence]]:
    """Collect the evidence of every verdict given inside, keyed by (diagnostic, reason)."""
    seen: dict[tuple[str | None, str], Evidence] = {}
    token = _RECORDED.set(seen)
    try:
        yield seen
    finally:
        _RECORDED.reset(token)


def evidence_of(recipient: FailedRecipient, seen: dict[tuple[str | None, str], Evidence]) -> Evidence | None:
    """The recipient's evidence: its own, or the one recorded for its diagnostic and reason."""
    return recipient.evidence or seen.get((recipient.diagnostic or None, recipient.reason))


def category_of(reason: str) -> Category:
    return CATEGORY_OF.get(reason, Category.BLOCK)


def reply_code(text: str) -> str | None:
    """The first SMTP reply code (4xx/5xx) in lower-cased diagnostic text."""
    m = _REPLY_CODE.search(text)
    return m.group(0) if m else None


def classify(
    status: str | None,
    diagnostic: str | None,
    action: str | None = None,
    command: str | None = None,
    diagnostic_type: str | None = None,
    explicit: str | None = None,
    remote_mta: str | None = None,
    session: bool = True,
    reporting_mta: str | None = None,
    status_comment: str | None = None,
) -> Verdict:
    """Reason, category and hard/soft for one recipient.

    ``explicit`` is a reason a family-specific rule already decided (see
    :mod:`sidecar.bounce.parse.remote_host`, :mod:`sidecar.bounce.parse.reporting_mta`); vague ones (``userunknown``,
    ``expired`` ...) are still checked against the status and the wording. ``session`` False:
    the reporting gateway quotes no SMTP session, so an echoed recipient is no sign of ``RCPT``.
    """
    text = " ".join((diagnostic or "")[: MAX_DIAGNOSTIC * 2].lower().split())[:MAX_DIAGNOSTIC]
    if status_comment:  # "Status: 5.2.1 (mailbox disabled, ...)": the reporting MTA's own words
        text = f"{text} ({' '.join(status_comment.lower().split())})" if text else status_comment.lower()
    reply = reply_code(text) if text else None
    found = find_status(text, reply[0] if reply else None) if text else None
    field = status
    status = prefer_status(status, found, reply)
    source = "none" if status is None else ("dsn-field" if status == field else "text")
    klass = status[0] if status else (reply[0] if reply else None)
    if status is None and klass in ("4", "5"):
        status, source = f"{klass}.0.0", "reply-code"
    if status and status.startswith("2."):
        return Verdict("delivered", Category.UNKNOWN, None, status)
    if command is None and session and text and _RCPT_ECHO.search(text):
        command = "RCPT"
    # addresses and the remote host's name are not wording: "userunknown@example.org" must
    # not read as "user unknown", nor "mx.cloudfilter.example" as a filter
    wording = _ADDRESS.sub("<>", text) if "@" in text else text
    if "host " in wording or "talking to " in wording:
        wording = _REMOTE_HOST.sub("host <>", wording)
    explicit_from_family = explicit is not None
    if explicit is None:
        explicit = remote_reason(text, remote_mta, reporting_mta)
    reason, how = decide(status, wording, command, diagnostic_type, action, explicit, session)
    if not reason and explicit:
        reason, how = explicit, "explicit"  # a family's vague reason, not contradicted by anything more precise
    if not reason:
        if action == "delayed":
            reason, how = "expired", "action"
        else:
            reason, how = ("onhold" if text else "undefined"), "none"
    temporary = klass == "4" or action == "delayed"
    if reason == "hostunknown" and temporary:
        reason = "networkerror"  # the reporting MTA keeps retrying a lookup that may still resolve
    elif reason == "hostunknown" and _DNS_TRY_AGAIN.search(wording):
        temporary = True  # "Host or domain name not found ... try again": a DNS failure, soft
    if reason in _HARD_REASONS:
        hard: bool | None = not temporary
    elif reason == "notaccept":
        hard = klass == "5" and action != "delayed"
    else:
        hard = False
    if how == "explicit":
        how = "family" if explicit_from_family else "provider"
    matched = first_match(reason, wording) if wording else None
    if matched is None and reason == "filtered" and wording:
        matched = first_match("userunknown", wording)  # "user unknown" words read as a refusal
    evidence = Evidence(
        status, source, how, matched[0] if matched else None, matched[1] if matched else None, command, temporary
    )
    seen = _RECORDED.get()
    if seen is not None:
        seen[diagnostic or None, reason] = evidence
    return Verdict(reason, category_of(reason), hard, status, evidence)


def provider_reason(address: str, verdict: Verdict) -> Verdict:
    """Provider bounces that carry no code or wording a pattern could use."""
    if verdict.reason in ("onhold", "undefined") and address.endswith("@googlegroups.com"):
        # Google Groups (localised text): not a member of, or no such, group -> sender rejected
        return Verdict("rejected", category_of("rejected"), False, verdict.status or "5.0.0")
    return verdict
