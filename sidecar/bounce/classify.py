"""Categorise one failed recipient: exact status codes first, diagnostic text next.

Input is what a detector found (DSN status, action, diagnostic text, SMTP command); output is
a sisimai-style reason name, the coarse :class:`Category` and whether the address is
permanently bad (``hard``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sidecar.bounce.model import Category
from sidecar.bounce.patterns import match_reason

_STATUS_IN_TEXT = re.compile(r"(?<![\d.])[#(]?([45])\.(\d{1,3})\.(\d{1,3})(?![\d.]*\d)")
_REPLY_CODE = re.compile(r"(?<![\d.])([45])\d\d(?=[\s-]|$)")

# Status codes precise enough to decide the reason by themselves (class digit dropped).
_EXACT_STATUS: dict[str, str] = {
    "1.6": "hasmoved",
    "1.10": "userunknown",
    "1.2": "hostunknown",
    "2.2": "mailboxfull",
    "2.3": "exceedlimit",
    "3.4": "mesgtoobig",
    "1.7": "rejected",
    "1.8": "rejected",
    "7.25": "requireptr",
    "7.26": "authfailure",
    "7.23": "authfailure",
    "7.509": "authfailure",
    "7.510": "authfailure",
    "7.27": "notaccept",
    "7.13": "suspend",
    "7.9": "policyviolation",
    "3.1": "systemfull",
    "4.6": "networkerror",
    "6.1": "contenterror",
    "1.351": "userunknown",
}
# Status codes that only suggest a reason; diagnostic text may refine them.
_STATUS_HINT: dict[str, str] = {
    "1.1": "userunknown",
    "1.0": "userunknown",
    "1.2": "hostunknown",
    "1.3": "syntaxerror",
    "1.4": "userunknown",
    "2.0": "filtered",
    "2.1": "suspend",
    "2.4": "systemerror",
    "3.0": "systemerror",
    "3.2": "systemerror",
    "3.3": "systemerror",
    "3.5": "systemerror",
    "4.0": "networkerror",
    "4.1": "expired",
    "4.2": "networkerror",
    "4.3": "systemerror",
    "4.4": "hostunknown",
    "4.5": "networkerror",
    "4.7": "expired",
    "5.0": "syntaxerror",
    "5.1": "syntaxerror",
    "5.2": "syntaxerror",
    "5.3": "syntaxerror",
    "5.4": "syntaxerror",
    "5.5": "syntaxerror",
    "6.0": "contenterror",
    "6.2": "contenterror",
    "6.3": "contenterror",
    "6.5": "contenterror",
    "6.9": "contenterror",
    "7.0": "securityerror",
    "7.1": "blocked",
    "7.2": "securityerror",
    "7.7": "securityerror",
    "7.6": "securityerror",
    "7.8": "securityerror",
}

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


def category_of(reason: str) -> Category:
    return CATEGORY_OF.get(reason, Category.BLOCK)


def status_in_text(text: str) -> str | None:
    """The first enhanced status code in free text (``550 5.1.1 ...`` -> ``5.1.1``)."""
    m = _STATUS_IN_TEXT.search(text)
    return f"{m.group(1)}.{m.group(2)}.{m.group(3)}" if m else None


def reply_class(text: str) -> str | None:
    m = _REPLY_CODE.search(text)
    return m.group(1) if m else None


def _better_status(status: str | None, text: str) -> str | None:
    """Prefer the diagnostic's own status over a vaguer (x.0.0) or missing DSN Status."""
    found = status_in_text(text) if text else None
    if status is None:
        return found
    if found and status.endswith(".0.0") and found[0] == status[0] and not found.endswith(".0.0"):
        return found
    return status


def classify(
    status: str | None,
    diagnostic: str | None,
    action: str | None = None,
    command: str | None = None,
    diagnostic_type: str | None = None,
) -> Verdict:
    text = " ".join((diagnostic or "").lower().split())
    status = _better_status(status, text)
    klass = status[0] if status else reply_class(text)
    if status is None and klass in ("4", "5"):
        status = f"{klass}.0.0"
    if status and status.startswith("2."):
        return Verdict("delivered", Category.UNKNOWN, None, status)
    detail = status.split(".", 1)[1] if status else ""
    reason = _EXACT_STATUS.get(detail)
    if reason is None:
        reason = match_reason(text) if text else None
        if reason is None and diagnostic_type and diagnostic_type.startswith("X-UNIX"):
            reason = "mailererror"
        hint = _STATUS_HINT.get(detail)
        if reason == "userunknown" and command == "DATA" and hint != "userunknown":
            reason = "filtered"
        elif reason == "userunknown" and command == "MAIL":
            reason = "rejected"
        elif (
            reason in (None, "securityerror", "systemerror", "expired")
            and hint
            in (
                "userunknown",
                "hostunknown",
                "mailboxfull",
            )
            or reason is None
        ):
            reason = hint
    if action == "delayed" and reason in (None, "networkerror", "systemerror", "syntaxerror", "securityerror"):
        reason = "expired"
    if reason is None:
        if klass == "4" or action == "delayed":
            reason = "expired"
        else:
            reason = "onhold" if text else "undefined"
    temporary = klass == "4" or action == "delayed"
    if reason == "hostunknown" and temporary:
        reason = "networkerror"  # a DNS failure that may still resolve
    if reason in _HARD_REASONS:
        hard: bool | None = not temporary
    elif reason == "notaccept":
        hard = klass == "5" and action != "delayed"
    else:
        hard = False
    return Verdict(reason, category_of(reason), hard, status)
