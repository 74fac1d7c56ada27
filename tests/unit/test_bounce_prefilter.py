"""The phrase patterns' literal prefilters (sidecar/bounce/parse/prefilter.py) never change a match."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sidecar.bounce.parse.patterns import PATTERNS, PREFILTERED
from sidecar.bounce.parse.phrases import CLASSES
from sidecar.bounce.parse.prefilter import Prefiltered, needles

DATA = Path(__file__).resolve().parent.parent / "data" / "bounces"


def _texts() -> list[str]:
    """Every distinct line of every sample bounce, lower-cased and whitespace-collapsed as
    classify() does, and the start of each whole message (longer texts, several phrases)."""
    out: set[str] = set()
    for path in sorted(DATA.rglob("*.eml")):
        text = path.read_bytes().decode("utf-8", "replace").lower()
        out.add(" ".join(text.split())[:3000])
        out.update(" ".join(line.split()) for line in text.splitlines() if line.strip())
    return sorted(out)


TEXTS = _texts()


@pytest.mark.parametrize("key", sorted(PATTERNS) + [c.name for c in CLASSES])
def test_the_prefiltered_search_finds_what_the_pattern_finds(key: str) -> None:
    by_name = {c.name: c for c in CLASSES}
    fast = PREFILTERED[key] if key in PREFILTERED else by_name[key].prefiltered
    pattern = fast.pattern
    assert fast.needles, f"{key}: no literal prefilter (every phrase pattern has one today)"
    for text in TEXTS:
        want, got = pattern.search(text), fast.search(text)
        assert (want and want.span()) == (got and got.span()), (key, text[:200])
        if want is not None:
            assert any(s in want.group(0) for s in fast.needles)  # the match itself holds a needle
    assert len(TEXTS) > 5000


def test_needles_are_the_literal_runs_every_match_contains() -> None:
    assert needles(re.compile("abc|de(?:f|g)h")) == ("de", "abc")
    assert needles(re.compile(r"message (?:is )?too (?:big|large)")) == ("message ",)
    assert needles(re.compile(r"(?:user|mailbox) unknown")) == (" unknown",)
    assert needles(re.compile(r"exceeds? (?:the )?size")) == ("exceed",)  # the optional s is no part
    assert needles(re.compile(r"(?:abc)+x")) == ("abc",)  # a required repeat counts
    # a run containing another adds nothing: "full" already admits "mailbox full"
    assert needles(re.compile("full|mailbox full")) == ("full",)


@pytest.mark.parametrize(
    "pattern",
    [
        re.compile("abc", re.IGNORECASE),  # case-folded literals are no str test
        re.compile("(?:abc)?x"),  # nothing long enough is required
        re.compile(r"\d+|abc"),  # one branch with no literal: no needle covers it
        re.compile("(?i:abc)"),  # a case-insensitive group
    ],
)
def test_no_prefilter_where_no_literal_is_certain(pattern: re.Pattern[str]) -> None:
    assert needles(pattern) is None
    fast = Prefiltered(pattern)
    for text in ("ABC", "abc", "x", "123", "zzz"):
        want, got = pattern.search(text), fast.search(text)
        assert (want and want.span()) == (got and got.span())
