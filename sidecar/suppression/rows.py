"""Rows of a suppression import or export: checked and normalised (the same rules as every other
entry point), CSV cells quoted against formula injection and unquoted again on import."""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from operator import itemgetter
from typing import IO, Any, NamedTuple, Union

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


class Normaliser:
    """One import row's values checked and normalised (the defaults filled in); InvalidValue naming
    the field if they cannot be stored. ``canon`` gives an address's stored form."""

    def __init__(
        self,
        canon: Callable[[str], str],
        *,
        default_reason: str = "imported",
        default_tenant: str = "",
        default_expires: float | None = None,
        source: str = "import",
        now: float,
    ) -> None:
        self.canon, self.now = canon, now
        self.reason, self.tenant, self.expires, self.source = default_reason, default_tenant, default_expires, source

    def __call__(
        self,
        address: str | None,
        tenant: str | None,
        reason: str | None,
        category: str | None,
        created_at: str | None,
        expires_at: str | None,
        source: str | None,
        note: str | None,
    ) -> tuple[str, str, str, str | None, str, str | None, float, float | None]:
        try:
            addr = self.canon(address or "")
        except AddressError as e:
            raise InvalidValue("address", str(e)) from None
        tenant = (tenant or self.tenant).strip()
        reason = (reason or self.reason).strip()
        category, src, note = category or None, source or self.source, note or None
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
        now = self.now
        created = parse_time(created_at, "created_at", now=now, past=True) if created_at else None
        expires = parse_time(expires_at, "expires_at", now=now, allow_never=True) if expires_at else self.expires
        return (addr, tenant, reason, category, src, note, now if created is None else created, expires)


def normalise_row(
    r: dict[str, str], canon: Callable[[str], str], **kw: Any
) -> tuple[str, str, str, str | None, str, str | None, float, float | None]:
    """One import row (a dict of CSV_FIELDS) checked and normalised; InvalidValue (naming the field)."""
    return Normaliser(canon, **kw)(*(r.get(f) for f in CSV_FIELDS))


CHECK_BATCH = 2_000  # rows read before they are checked (sidecar.suppression.batch_check)


class Uniform(NamedTuple):
    """Checked rows that differ only in their address: ``(address, *rest)`` each."""

    addresses: Sequence[str]
    rest: tuple[Any, ...]


Batch = Union[list[tuple[Any, ...]], Uniform]  # noqa: UP007 - a runtime alias


def flatten(batches: Iterable[Batch]) -> Iterator[tuple[Any, ...]]:
    """The rows of ``batches``, one by one."""
    for b in batches:
        if isinstance(b, Uniform):
            rest = b.rest
            yield from [(a, *rest) for a in b.addresses]
        else:
            yield from b


class Line(dict[str, str]):
    """An input row that knows its line number in the file (for error messages)."""

    line = 0


class CsvRows:
    """The rows of an import CSV (header checked), with csv_unescape applied to every cell;
    ``line`` is the first physical line of the row last read (a quoted cell may span several)."""

    def __init__(self, fh: IO[str]) -> None:
        self.fh = fh
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
        # DictReader's own rows cost a property call and a check per row (a million rows: seconds);
        # its csv.reader directly, with the same results: blank lines skipped, a short row's
        # missing cells absent (None through .get), a long row's extra cells ignored.
        names = self.reader.fieldnames or []
        reader = self.reader.reader
        first = reader.line_num + 1
        for row in reader:
            self.line, first = first, reader.line_num + 1
            if row:
                cells = [csv_unescape(v) if v[:1] == "'" else v for v in row]
                yield dict(zip(names, cells, strict=False))  # a long row's extra cells: ignored

    def checked(self, normalise: Normaliser) -> Iterator[tuple[Any, ...]]:
        """The rows of ``checked_batches``, one by one."""
        return flatten(self.checked_batches(normalise))

    def checked_batches(self, normalise: Normaliser) -> Iterator[Batch]:
        """``normalise`` over the rows, straight from the cells (no dict per row), a batch of
        CHECK_BATCH rows at a time through sidecar.suppression.batch_check when it can (then one
        Uniform), else row by row (a list of rows): the values
        ``iter(self)`` would give, in CSV_FIELDS order (a column the header lacks, or a short row's
        missing cell, reads as empty); ValueError("line N: field: problem") for a bad row.
        Requires a header without repeated names (``simple``)."""
        from sidecar.suppression.batch_check import fast_batch

        names = self.reader.fieldnames or []
        width = len(names)
        pos = {n: i for i, n in enumerate(names)}
        cells_of = itemgetter(*(pos.get(f, width) for f in CSV_FIELDS))  # ``width``: the empty cell appended
        pad = [""] * (width + 1)
        reader = self.reader.reader
        last = reader.line_num
        while True:
            batch: list[list[str]] = []
            ends: list[int] = []  # each row's last line
            for row in islice(reader, CHECK_BATCH):
                batch.append(row)
                ends.append(reader.line_num)
            if not batch:
                return
            fast = fast_batch(batch, width, pos, normalise)
            if fast is not None:
                yield fast
                last = ends[-1]
                continue
            out = []
            for row, end in zip(batch, ends, strict=True):
                first, last = last + 1, end
                if not row:
                    continue
                if len(row) == width:
                    row.append("")
                else:  # a short row's missing cells, a long row's extra ones: as iter(self)
                    row = (row + pad)[:width] + [""]
                values = cells_of(row)
                if "'" in "".join(values):  # rare: only then look for the export's formula quote
                    values = tuple(csv_unescape(v) for v in values)
                try:
                    out.append(normalise(*values))
                except InvalidValue as e:
                    self.line = first
                    raise ValueError(f"line {first}: {e}") from None
            yield out

    @property
    def simple(self) -> bool:
        names = self.reader.fieldnames or []
        return len(set(names)) == len(names)


# A plain address: one @, a local part of 1..256 and a domain of printable ASCII other than space, '"',
# '<', '>' and '@'. Any other goes through the full check.
PLAIN = re.compile("[!#-;=?A-~]{1,256}@[!#-;=?A-~]+")


class DomainMemo:
    """``canon`` for many addresses, remembering the domains it has checked (an import list names
    a few thousand domains for a million addresses). A plain address (printable ASCII, no space,
    quote or angle bracket, lengths within the limits) whose domain ``canon`` has already accepted
    gets the same result without the checks again; any other goes through ``canon`` itself, so the
    result and the errors are canon's."""

    LIMIT = 100_000  # domains remembered

    def __init__(self, canon: Callable[[str], str]) -> None:
        self.canon = canon
        self.domains: dict[str, str] = {}
        # canon keeps the local part as given, or lower-cases it (case_sensitive_local); else no memo
        probe = canon("Ab@Example.COM")
        self.lower = probe == "ab@example.com"
        self.on = self.lower or probe == "Ab@example.com"

    def __call__(self, address: str) -> str:
        if not (self.on and len(address) <= 320 and PLAIN.fullmatch(address)):
            return self.canon(address)
        local, _, domain = address.partition("@")
        done = self.domains.get(domain)
        if done is not None:
            return f"{local.lower() if self.lower else local}@{done}"
        result = self.canon(address)
        if len(self.domains) < self.LIMIT:
            self.domains[domain] = result.rpartition("@")[2]
        return result


def check_rows(
    rows: Iterable[dict[str, str]], canon: Callable[[str], str] = canonical, **kw: Any
) -> Iterator[tuple[Any, ...]]:
    """normalise_row over ``rows``; a bad one raises ValueError("line N: field: problem")."""
    return flatten(check_batches(rows, canon, **kw))


def check_batches(
    rows: Iterable[dict[str, str]], canon: Callable[[str], str] = canonical, **kw: Any
) -> Iterator[Batch]:
    """check_rows in batches (lists of rows, or a Uniform for a CSV batch that is)."""
    canon = DomainMemo(canon)
    if isinstance(rows, CsvRows) and rows.simple:
        yield from rows.checked_batches(Normaliser(canon, **kw))
        return
    normalise = Normaliser(canon, **kw)
    yield from _parts(rows, normalise)


def _parts(rows: Iterable[dict[str, str]], normalise: Normaliser) -> Iterator[list[tuple[Any, ...]]]:
    out: list[tuple[Any, ...]] = []
    for lineno, r in enumerate(rows, start=2):
        try:
            out.append(normalise(*(r.get(f) for f in CSV_FIELDS)))
        except InvalidValue as e:
            raise ValueError(f"line {getattr(r, 'line', 0) or getattr(rows, 'line', lineno)}: {e}") from None
        if len(out) >= CHECK_BATCH:
            yield out
            out = []
    yield out
