"""Literal prefilters for the phrase patterns: the words no match can do without.

A reason's pattern is an alternation of dozens of phrases, and ``re`` tries each of them at
every position of the text. Almost every phrase has a literal run that any match of it contains
(``"too big for "``, ``"no such "``), so a text containing none of a pattern's runs cannot match
it and is not searched at all: a few ``str in str`` tests instead of a regex scan.

The runs are read from the pattern's own parse tree (literal runs of a sequence, through groups,
required repeats and alternations), never written by hand, so :meth:`Prefiltered.search` finds
exactly what ``pattern.search`` finds. A pattern with no usable runs is always searched.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Any

_parser: Any = importlib.import_module("re._parser")  # the parser re.compile itself uses

_MIN_NEEDLE = 2  # shorter runs reject too little to pay for the test


def _candidates(items: Any) -> list[set[str]]:
    """Sets of strings of which any match of the sequence ``items`` contains at least one."""
    out: list[set[str]] = []
    run: list[str] = []
    for op, av in items:
        if op is _parser.LITERAL:
            run.append(chr(av))
            continue
        if run:
            out.append({"".join(run)})
            run = []
        found: set[str] | None = None
        if op is _parser.SUBPATTERN:
            _group, add_flags, _del_flags, body = av
            if not add_flags & re.IGNORECASE:
                found = _best(body)
        elif op is _parser.BRANCH:
            found = set()
            for branch in av[1]:
                each = _best(branch)
                if each is None:
                    found = None
                    break
                found |= each
        elif op in (_parser.MAX_REPEAT, _parser.MIN_REPEAT) and av[0] >= 1:
            found = _best(av[2])
        if found:
            out.append(found)
    if run:
        out.append({"".join(run)})
    return out


def _best(items: Any) -> set[str] | None:
    """The candidate whose shortest string is longest (fewest strings on a tie)."""
    found = _candidates(items)
    if not found:
        return None
    return max(found, key=lambda s: (min(map(len, s)), -len(s)))


def needles(pattern: re.Pattern[str]) -> tuple[str, ...] | None:
    """Strings of which every match of ``pattern`` contains one; None when there are none to use."""
    if pattern.flags & (re.IGNORECASE | re.VERBOSE):
        return None
    try:
        found = _best(_parser.parse(pattern.pattern, pattern.flags))
    except Exception:  # an unknown parse-tree shape: no prefilter, never a wrong one
        return None
    return _minimal(found)


def _minimal(found: set[str] | None) -> tuple[str, ...] | None:
    if not found or min(map(len, found)) < _MIN_NEEDLE:
        return None
    kept: list[str] = []
    for s in sorted(found, key=lambda s: (len(s), s)):
        if not any(k in s for k in kept):  # a run containing a kept one adds nothing
            kept.append(s)
    return tuple(kept)


class Prefiltered:
    """A compiled pattern searched only in texts that contain one of its :func:`needles`.

    The needles are worked out at the first search (parsing every pattern at import would
    cost a short-lived ``sidecar ingest`` tens of milliseconds). With ``parts`` (the patterns
    whose alternation ``pattern`` is), they are the union of the parts' own.
    """

    __slots__ = ("pattern", "_parts", "_needles")

    def __init__(self, pattern: re.Pattern[str], parts: Callable[[], tuple[Prefiltered, ...]] | None = None) -> None:
        self.pattern = pattern
        self._parts = parts  # called when the needles are first needed (the parts compile lazily too)
        self._needles: tuple[str, ...] | None = ()  # (): not worked out yet

    @property
    def needles(self) -> tuple[str, ...] | None:
        if self._needles == ():
            parts = self._parts() if self._parts is not None else ()
            if parts:
                each = [p.needles for p in parts]
                self._needles = None if any(n is None for n in each) else _minimal({s for n in each for s in n or ()})
            else:
                self._needles = needles(self.pattern)
        return self._needles

    def search(self, text: str) -> re.Match[str] | None:
        found = self._needles
        if found == ():
            found = self.needles
        if found is not None and not any(s in text for s in found):
            return None
        return self.pattern.search(text)
