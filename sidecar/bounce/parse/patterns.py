"""Diagnostic text patterns, one compiled regex per sisimai reason name.

The wording lives in :mod:`.phrases` (named phrase classes with their sources); a reason's
pattern is the alternation of the classes that name it. Matched against lower-cased,
whitespace-collapsed diagnostic text. :data:`ORDER` lists the reasons from the most to the
least specific, for :func:`match_reason` (the first match wins).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from sidecar.bounce.parse.phrases import CLASSES, PhraseClass
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

# the phrase classes that name each reason, in parse/phrases.py's order
OF_REASON: dict[str, tuple[PhraseClass, ...]] = {}
for _c in CLASSES:
    OF_REASON[_c.reason] = (*OF_REASON.get(_c.reason, ()), _c)

PATTERNS: dict[str, re.Pattern[str]] = {
    reason: re.compile("|".join(f"(?:{p})" for c in OF_REASON[reason] for p in c.phrases)) for reason in ORDER
}


# the same patterns, searched only in texts containing one of their literal runs (parse/prefilter.py)
def _classes_of(reason: str) -> Callable[[], tuple[Prefiltered, ...]]:
    return lambda: tuple(c.prefiltered for c in OF_REASON[reason])


PREFILTERED: dict[str, Prefiltered] = {
    reason: Prefiltered(pattern, _classes_of(reason)) for reason, pattern in PATTERNS.items()
}


def match_reason(text: str, order: tuple[str, ...] = ORDER) -> str | None:
    """The first reason in ``order`` whose pattern matches lower-cased ``text``."""
    for reason in order:
        if PREFILTERED[reason].search(text):
            return reason
    return None


def first_match(reason: str, text: str) -> tuple[str, str] | None:
    """(phrase class, the words matched) of the first class naming ``reason`` found in ``text``."""
    for c in OF_REASON.get(reason, ()):
        m = c.prefiltered.search(text)
        if m:
            return c.name, m.group(0)
    return None
