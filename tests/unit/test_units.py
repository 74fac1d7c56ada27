"""sidecar.units (the one parser of user-typed times) and the stored-text rules, without a database."""

from __future__ import annotations

import math

import pytest

from sidecar.config.schema import parse_duration as config_parse_duration
from sidecar.suppression.fields import check_text
from sidecar.suppression.rows import csv_escape, csv_unescape
from sidecar.units import MAX_TIME, InvalidValue, iso, parse_duration, parse_time

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    "value,past,expect",
    [
        ("7d", False, NOW + 7 * 86400),
        ("24h", True, NOW - 86400),
        ("90s", False, NOW + 90),
        ("2026-11-01", False, 1793491200.0),
        ("2026-11-01T12:00:00Z", False, 1793534400.0),
        ("2026-11-01T12:00:00+01:00", False, 1793530800.0),
        ("1700000000", False, 1700000000.0),
        (1700000000, False, 1700000000.0),
        (1700000000.5, True, 1700000000.5),
        ("0", False, 0.0),
        ("9999-12-31T23:59:59Z", False, MAX_TIME),
        (None, False, None),
        ("", False, None),
    ],
)
def test_accepted(value, past, expect):
    assert parse_time(value, "f", now=NOW, past=past) == expect


@pytest.mark.parametrize(
    "value",
    [
        float("inf"),
        float("-inf"),
        float("nan"),
        1e400,
        -1e300,
        1e20,
        -1,
        MAX_TIME + 1,
        True,
        [],
        {},
        "inf",
        "NaN",
        "1e400",
        "-5",
        "1e20",
        "100000000000000000000",
        "0001-01-01",
        "10000-01-01",
        "9999-12-31T23:59:59-05:00",
        "99999999999d",
        "١٢",
        "²",
        "next tuesday",
        "never",
        "7d" + "x" * 100,
    ],
)
def test_refused_with_the_field_named(value):
    with pytest.raises(InvalidValue) as e:
        parse_time(value, "expires_at", now=NOW)
    assert e.value.field == "expires_at" and str(e.value).startswith("expires_at: ")


def test_never_only_where_allowed():
    assert parse_time("never", "expires_at", now=NOW, allow_never=True) is None
    assert parse_time("NONE", "expires_at", now=NOW, allow_never=True) is None


def test_durations_are_finite_and_config_uses_the_same_parser():
    assert config_parse_duration is parse_duration
    assert parse_duration("1h") == 3600 and parse_duration(5) == 5
    for bad in (float("inf"), float("nan"), -1, "soon", True, "1" * 40):
        with pytest.raises(ValueError):
            parse_duration(bad)
    assert math.isfinite(parse_duration("9" * 16 + "w"))


def test_iso_bounds():
    assert iso(0.0) == "1970-01-01T00:00:00Z" and iso(MAX_TIME) == "9999-12-31T23:59:59Z" and iso(None) == ""


@pytest.mark.parametrize(
    "char", ["\r", "\n", "\x00", "\t", "\x1f", "\x7f", "\x85", "\x9f", "\u2028", "\u2029", "\ud800", "\udfff"]
)
def test_control_characters_and_lone_surrogates_refused(char):
    with pytest.raises(InvalidValue) as e:
        check_text("note", f"a{char}b")
    assert e.value.field == "note" and f"U+{ord(char):04X}" in e.value.message


def test_text_allowed_and_lengths():
    assert check_text("note", "naïve 日本 \U0001f600 'quotes' \"x\" \\N") is not None
    assert check_text("reason", None) is None
    with pytest.raises(InvalidValue, match="reason: longer than 64"):
        check_text("reason", "r" * 65)


@pytest.mark.parametrize(
    "value,cell",
    [
        ("=1+2", "'=1+2"),
        ("+x", "'+x"),
        ("-x", "'-x"),
        ("@x", "'@x"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("'=x", "''=x"),
        ("''@x", "'''@x"),
        ("'x", "'x"),
        ("x=1", "x=1"),
        ("", ""),
        ("'", "'"),
    ],
)
def test_csv_escape_round_trips(value, cell):
    assert csv_escape(value) == cell and csv_unescape(cell) == value
