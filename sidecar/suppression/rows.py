"""Rows of a suppression import or export: checked and normalised (the same rules as every other
entry point), CSV cells quoted against formula injection and unquoted again on import."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

from sidecar.suppression.address import AddressError, canonical
from sidecar.suppression.fields import CONTROL, check_text
from sidecar.units import InvalidValue, parse_time

CSV_FIELDS = ("address", "tenant", "reason", "category", "created_at", "expires_at", "source", "note")

# CSV cells a spreadsheet would read as a formula (OWASP "CSV injection"): exported with a leading
# single quote, which our own import takes off again (and only then: see csv_unescape).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_escape(value: str) -> str:
    """``value`` safe for a spreadsheet: a leading ' before a formula start (or before quotes before one)."""
    if value[:1] in FORMULA_START or (value[:1] == "'" and value.lstrip("'")[:1] in FORMULA_START):
        return "'" + value
    return value


def csv_unescape(value: str) -> str:
    """The inverse of csv_escape: one leading ' is dropped only when quotes then a formula start follow."""
    if value[:1] == "'" and value.lstrip("'")[:1] in FORMULA_START:
        return value[1:]
    return value


def normalise_row(
    r: dict[str, str],
    canon: Callable[[str], str],
    *,
    default_reason: str = "imported",
    default_tenant: str = "",
    default_expires: float | None = None,
    source: str = "import",
    now: float,
) -> tuple[str, str, str, str | None, str, str | None, float, float | None]:
    """One import row checked and normalised; InvalidValue (naming the field) if it cannot be stored."""
    try:
        addr = canon(r.get("address") or "")
    except AddressError as e:
        raise InvalidValue("address", str(e)) from None
    tenant = (r.get("tenant") or default_tenant).strip()
    reason = (r.get("reason") or default_reason).strip()
    category, src, note = r.get("category") or None, r.get("source") or source, r.get("note") or None
    # one search over all of them (a million rows; limits as fields.MAX_LEN): the slow path names the field
    if (
        CONTROL.search(f"{tenant} {reason} {category or ''} {src} {note or ''}")
        or len(tenant) > 255
        or len(reason) > 64
        or len(category or "") > 32
        or len(src) > 32
        or len(note or "") > 4000
    ):
        for name, value in (
            ("tenant", tenant),
            ("reason", reason),
            ("category", category),
            ("source", src),
            ("note", note),
        ):
            check_text(name, value)
    created = parse_time(r.get("created_at"), "created_at", now=now, past=True)
    expires = (
        parse_time(r["expires_at"], "expires_at", now=now, allow_never=True) if r.get("expires_at") else default_expires
    )
    return (addr, tenant, reason, category, src, note, now if created is None else created, expires)


class Line(dict[str, str]):
    """An input row that knows its line number in the file (for error messages)."""

    line = 0


class CsvRows:
    """The rows of an import CSV (header checked), with csv_unescape applied to every cell;
    ``line`` is the first physical line of the row last read (a quoted cell may span several)."""

    def __init__(self, fh: IO[str]) -> None:
        self.reader = csv.DictReader(fh)
        names = self.reader.fieldnames
        if not names or "address" not in names:
            raise ValueError(
                f"CSV needs a header line with at least an 'address' column (known columns: {', '.join(CSV_FIELDS)})"
            )
        unknown = set(names) - set(CSV_FIELDS)
        if unknown:
            raise ValueError(f"CSV has unknown columns: {', '.join(sorted(unknown))} (known: {', '.join(CSV_FIELDS)})")
        self.line = 1

    def __iter__(self) -> Iterator[dict[str, str]]:
        reader = self.reader
        first = reader.line_num + 1
        for r in reader:
            self.line, first = first, reader.line_num + 1
            for k, v in r.items():
                if v and v[0] == "'":
                    r[k] = csv_unescape(v)
            yield r


def check_rows(
    rows: Iterable[dict[str, str]], canon: Callable[[str], str] = canonical, **kw: Any
) -> Iterator[tuple[Any, ...]]:
    """normalise_row over ``rows``; a bad one raises ValueError("line N: field: problem")."""
    for lineno, r in enumerate(rows, start=2):
        try:
            yield normalise_row(r, canon, **kw)
        except InvalidValue as e:
            raise ValueError(f"line {getattr(r, 'line', 0) or getattr(rows, 'line', lineno)}: {e}") from None
