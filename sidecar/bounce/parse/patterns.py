"""Diagnostic text patterns, one compiled regex per sisimai reason name.

The wording lives in :mod:`.phrases` (named phrase classes with their sources); a reason's
pattern is the alternation of the classes that name it. Matched against lower-cased,
whitespace-collapsed diagnostic text. :data:`ORDER` lists the reasons from the most to the
least specific, for :func:`match_reason` (the first match wins).
"""

from __future__ import annotations

import re

from sidecar.bounce.parse.phrases import OF_REASON
from sidecar.bounce.parse.prefilter import Prefiltered

ORDER: tuple[str, ...] = (
    "mesgtoobig",
    "mailboxfull",
    "suspend",
    "hasmoved",
    "norelaying",
    "failedstarttls",
    "authfailure",
    "requireptr",
    "badreputation",
    "virusdetected",
    "notcompliantrfc",
    "policyviolation",
    "spamdetected",
    "toomanyconn",
    "speeding",
    "rejected",
    "userunknown",
    "notaccept",
    "networkerror",
    "hostunknown",
    "blocked",
    "filtered",
    "contenterror",
    "syntaxerror",
    "systemfull",
    "mailererror",
    "expired",
    "securityerror",
    "systemerror",
)

PATTERNS: dict[str, re.Pattern[str]] = {
    reason: re.compile("|".join(f"(?:{p})" for c in OF_REASON[reason] for p in c.phrases)) for reason in ORDER
}

# the same patterns, searched only in texts containing one of their literal runs (parse/prefilter.py)
PREFILTERED: dict[str, Prefiltered] = {
    reason: Prefiltered(pattern, tuple(c.prefiltered for c in OF_REASON[reason]))
    for reason, pattern in PATTERNS.items()
}


def match_reason(text: str, order: tuple[str, ...] = ORDER) -> str | None:
    """The first reason in ``order`` whose pattern matches lower-cased ``text``."""
    for reason in order:
        if PREFILTERED[reason].search(text):
            return reason
    return None
