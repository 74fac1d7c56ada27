"""Deciding the reason for one failed recipient, in sisimai's order of precedence.

The decision follows the shape of sisimai's reason finder (BSD-2, see docs/bounces.md): the
enhanced status code names a provisional reason; a first ordered pass of *probes* checks
each reason against the status, the SMTP command that failed and the diagnostic wording;
when nothing is decided a second ordered pass matches wording only, then falls back to the
status class, the diagnostic type and the action.

Precedence between the status code and the wording (docs/bounces.md, "Phrase classes"):

* A family's or provider's own code or sentence (``explicit``) wins when it is precise.
* A precise enhanced code names the reason; wording overrules it only where the code's
  registry meaning admits it: an x.1.1 whose text names another cause (relaying, a block, a
  full or moved mailbox, a refused sender, a rate limit, a filter), an x.7.x whose text names
  a more precise block (reputation, spam, authentication ...).
* A generic code (``X.0.0``, ``X.Y.0``, ``5.4.x`` network codes, none at all) leaves the
  reason to the wording.

Two probes depend on the SMTP command, and they matter most for hard/soft:

* ``userunknown`` from wording: at ``RCPT``, or after ``DATA``/with no command when the
  status names no other cause (receivers that check recipients late word it the same way),
  unless the gateway quotes no SMTP session or the wording names a filter (then
  ``filtered``: the address may have been accepted and the message refused later).
* ``rejected`` (the *sender* was refused) is believed from wording at ``MAIL FROM``/``DATA``
  or when the status says nothing more precise.
"""

from __future__ import annotations

import re

from sidecar.bounce.parse.patterns import PREFILTERED
from sidecar.bounce.parse.phrases import BY_NAME

# Enhanced status code -> the reason it names (RFC 3463/5248 semantics, sisimai's reading).
STATUS_NAME: dict[str, str] = {
    "4.1.6": "hasmoved",
    "4.1.7": "rejected",
    "4.1.8": "rejected",
    "4.1.9": "systemerror",
    "4.2.1": "blocked",
    "4.2.2": "mailboxfull",
    "4.2.3": "exceedlimit",
    "4.2.4": "filtered",
    "4.3.1": "systemfull",
    "4.3.2": "notaccept",
    "4.3.3": "systemerror",
    "4.3.5": "systemerror",
    "4.4.1": "expired",
    "4.4.2": "networkerror",
    "4.4.3": "systemerror",
    "4.4.4": "networkerror",
    "4.4.5": "systemfull",
    "4.4.6": "networkerror",
    "4.4.7": "expired",
    "4.4.8": "networkerror",
    "4.5.3": "systemerror",
    "4.5.5": "systemerror",
    "4.6.0": "contenterror",
    "4.6.2": "contenterror",
    "4.6.5": "contenterror",
    "4.7.1": "blocked",
    "4.7.2": "blocked",
    "4.7.5": "securityerror",
    "4.7.6": "securityerror",
    "4.7.7": "securityerror",
    "4.7.12": "securityerror",
    "4.7.15": "securityerror",
    "4.7.16": "mesgtoobig",
    "4.7.24": "authfailure",
    "4.7.25": "requireptr",
    "4.7.26": "authfailure",
    "5.1.0": "userunknown",
    "5.1.1": "userunknown",
    "5.1.2": "hostunknown",
    "5.1.3": "userunknown",
    "5.1.4": "filtered",
    "5.1.6": "hasmoved",
    "5.1.7": "rejected",
    "5.1.8": "rejected",
    "5.1.9": "systemerror",
    "5.1.10": "notaccept",
    "5.2.0": "filtered",
    "5.2.1": "filtered",
    "5.2.2": "mailboxfull",
    "5.2.3": "exceedlimit",
    "5.2.4": "filtered",
    "5.3.0": "systemerror",
    "5.3.1": "systemfull",
    "5.3.2": "notaccept",
    "5.3.3": "systemerror",
    "5.3.4": "mesgtoobig",
    "5.3.5": "systemerror",
    "5.4.0": "networkerror",
    "5.4.3": "systemerror",
    "5.4.4": "hostunknown",
    "5.5.2": "syntaxerror",
    "5.5.3": "toomanyconn",
    "5.5.4": "systemerror",
    "5.5.5": "systemerror",
    "5.5.6": "syntaxerror",
    "5.7.13": "suspend",
    "5.7.16": "mesgtoobig",
    "5.7.17": "hasmoved",
    "5.7.18": "hasmoved",
    "5.7.20": "authfailure",
    "5.7.21": "authfailure",
    "5.7.22": "authfailure",
    "5.7.23": "authfailure",
    "5.7.24": "authfailure",
    "5.7.25": "requireptr",
    "5.7.26": "authfailure",
    "5.7.27": "notaccept",
    "5.7.28": "spamdetected",
    "5.7.29": "authfailure",
    "5.7.30": "failedstarttls",
}
for _d in ("0", "1", "2", "3", "5", "6", "7", "8", "9"):
    STATUS_NAME.setdefault(f"5.6.{_d}", "contenterror")
for _n in range(12):
    STATUS_NAME.setdefault(f"5.7.{_n}", "securityerror")
for _n in (14, 15, 19):
    STATUS_NAME[f"5.7.{_n}"] = "securityerror"
# Microsoft's 5.7.5xx authentication family
STATUS_NAME["5.1.351"] = "userunknown"
STATUS_NAME["5.7.509"] = STATUS_NAME["5.7.510"] = "authfailure"

# Provisional reasons that the wording may still overrule.
RETRY = frozenset(
    {"", "undefined", "onhold", "systemerror", "securityerror", "expired", "networkerror", "hostunknown", "userunknown"}
)

# First pass: probes (status + command + wording), most specific first.
FIRST: tuple[str, ...] = (
    "mailboxfull",
    "mesgtoobig",
    "exceedlimit",
    "suspend",
    "hasmoved",
    "norelaying",
    "authfailure",
    "userunknown",
    "filtered",
    "requireptr",
    "notcompliantrfc",
    "badreputation",
    "contenterror",
    "rejected",
    "hostunknown",
    "spamdetected",
    "speeding",
    "toomanyconn",
    "blocked",
)
# Second pass: wording only, when the status left the reason open.
SECOND: tuple[str, ...] = (
    "mailboxfull",
    "authfailure",
    "badreputation",
    "speeding",
    "spamdetected",
    "virusdetected",
    "policyviolation",
    "norelaying",
    "notaccept",
    "systemerror",
    "networkerror",
    "suspend",
    "contenterror",
    "systemfull",
    "expired",
    "failedstarttls",
    "securityerror",
    "mailererror",
)
# Wording that overrules an x.1.1-like status: the text names another cause.
_NOT_USER = ("norelaying", "blocked", "mailboxfull", "hasmoved", "rejected", "notaccept", "speeding", "filtered")
_BEFORE_DATA = frozenset({"HELO", "EHLO", "MAIL", "RCPT", "STARTTLS", "AUTH", "CONNECT"})


def _matches(key: str, text: str) -> bool:
    """Whether ``text`` says ``key``: a reason name, or a phrase class name (parse/phrases.py)."""
    pattern = PREFILTERED.get(key) or (BY_NAME[key].prefiltered if key in BY_NAME else None)
    return bool(text) and pattern is not None and pattern.search(text) is not None


class _Text:
    """Lower-cased diagnostic with each reason's pattern searched at most once."""

    __slots__ = ("text", "seen")

    def __init__(self, text: str) -> None:
        self.text = text
        self.seen: dict[str, bool] = {}

    def says(self, reason: str) -> bool:
        hit = self.seen.get(reason)
        if hit is None:
            hit = self.seen[reason] = _matches(reason, self.text)
        return hit


# Statuses under which a statement that the mailbox does not exist decides after DATA too: those
# that name no cause (generic, network, system codes) and the other addressing codes (x.1.2
# domain, x.1.10 null MX: Microsoft 365 also gives 5.1.10 for "RecipientNotFound").
_OPEN_FOR_USER = frozenset(
    {"", "networkerror", "systemerror", "hostunknown", "notaccept", "expired", "onhold", "undefined"}
)
# Postfix's "Host or domain name not found" and an NXDOMAIN answer state that the name does not
# exist; a bare "Name service error ... try again" is a failed lookup (networkerror).
_NOT_FOUND_STATED = re.compile(r"host or domain name not found|domain name not found|nxdomain")
# Postfix's smtpd(8) names what it rejected: only "Recipient address rejected" is about the
# recipient. "Helo command rejected: Host not found" is our own name, never the recipient's.
_NOT_RECIPIENT = re.compile(r"(?:helo command|client host|sender address) rejected|\bsender <{1,2}>{1,2} ")


def _probe(
    reason: str, name: str, t: _Text, command: str | None, explicit: str | None, session: bool, coded: bool
) -> bool:
    if explicit == reason:
        return True
    if reason in ("userunknown", "hostunknown") and name != reason and _NOT_RECIPIENT.search(t.text):
        return False
    if reason == "userunknown":
        if name == "suspend" or command == "MAIL":
            return False
        if name == "userunknown":
            return not any(t.says(r) for r in _NOT_USER)
        if not t.says("userunknown"):
            return False
        if command == "RCPT":
            return True
        # After DATA, or with no command named: a receiver that checks recipients late (Yahoo,
        # Microsoft 365's edge ...) states that the mailbox does not exist ("mailbox-not-found").
        # The bare "user unknown" words stay ``filtered`` there: content filters and mobile
        # carriers use them for a refusal (sisimai's Filtered rule), as does a gateway that
        # quotes no SMTP session, or wording that names a filter.
        if not session or not t.says("mailbox-not-found") or t.says("filtered"):
            return False
        # a remote server's reply: after DATA, or with a precise code of its own (5.4.1, 5.1.10);
        # with neither, a gateway's report (sisimai's Filtered rule: the address may have
        # been accepted and the message refused later)
        return name in _OPEN_FOR_USER and (command == "DATA" or coded)
    if reason == "filtered":
        if name == "suspend":
            return False
        if name == "filtered":
            return t.says("userunknown") or t.says("filtered")
        if command in _BEFORE_DATA:
            return False
        return t.says("filtered") or t.says("userunknown")
    if reason == "rejected":
        if name == "rejected":
            return True
        if command == "MAIL" and name == "userunknown":
            return True  # an addressing status at MAIL FROM is about the sender
        if command == "MAIL" or (command == "DATA" and name != "userunknown"):
            return t.says("rejected")
        if name in ("", "undefined", "onhold", "securityerror", "systemerror"):
            return t.says("rejected")
        return False
    if reason == "mesgtoobig" and name == "exceedlimit":
        return False  # x.2.3: a per-mailbox limit, more precise than the wording
    if reason == "hostunknown":
        # "host or domain name not found" is about the DNS, even when it adds "try again"
        # (classify() makes that soft); a failed connection is not
        if not (name == "hostunknown" or t.says("hostunknown")) or t.says("network"):
            return False
        return not t.says("dns-temporary") or _NOT_FOUND_STATED.search(t.text) is not None
    return name == reason or t.says(reason)


def decide(
    status: str | None,
    text: str,
    command: str | None = None,
    diagnostic_type: str | None = None,
    action: str | None = None,
    explicit: str | None = None,
    session: bool = True,
) -> tuple[str, str]:
    """The reason name for one recipient and what decided it (``status``, ``wording``, ``explicit``,
    ``status-class``, ``action``, ``command``; ``""`` when nothing did).

    ``text`` is lower-cased, whitespace-collapsed.
    """
    if explicit and explicit not in RETRY:
        return explicit, "explicit"
    name = STATUS_NAME.get(status or "", "")
    coded = bool(status) and not (status or "").endswith(".0.0")  # a precise code, quoted or in the DSN
    t = _Text(text)
    mailer = bool(diagnostic_type and diagnostic_type.startswith("X-UNIX"))  # a local mailer program
    if not mailer:
        for reason in FIRST:
            if _probe(reason, name, t, command, explicit, session, coded):
                return reason, _how(reason, name, explicit)
    if name == "userunknown":
        for reason in _NOT_USER:
            if t.says(reason):
                return reason, "wording"
    if name in RETRY or mailer:
        for reason in SECOND:
            if t.says(reason):
                return reason, "wording"
        if name:
            return name, "status"
        head = (status or "")[:3]
        if head in ("5.6", "4.6"):
            return "contenterror", "status-class"
        if head in ("5.7", "4.7"):
            return "securityerror", "status-class"
        if diagnostic_type and diagnostic_type.startswith("X-UNIX"):
            return "mailererror", "diagnostic-type"
        if t.says("syntaxerror"):
            return "syntaxerror", "wording"
        if action in ("delayed", "expired"):
            return "expired", "action"
        if command in ("EHLO", "HELO"):
            return "blocked", "command"
        return "", ""
    return name, "status"


def _how(reason: str, name: str, explicit: str | None) -> str:
    if explicit == reason:
        return "explicit"
    return "status" if name == reason else "wording"
