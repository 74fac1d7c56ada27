"""Import rows: the domain memo gives exactly what the store's canonical form gives (and its errors);
the CSV reader gives what csv.DictReader gives."""

from __future__ import annotations

import csv
import io

import pytest

from sidecar.suppression.address import AddressError
from sidecar.suppression.rows import CsvRows, DomainMemo
from sidecar.suppression.store import SuppressionStore

ADDRESSES = [
    "A@Example.COM",
    "b@example.com.",
    "c@EXAMPLE.com",
    "d@example.com>",  # the domain "example.com>" is not the one remembered for example.com
    "<e@example.com>",
    "x y@example.com",
    '"q r"@example.com',
    "a@bad_domain-.com",
    "@example.com",
    "a@",
    "no-at-sign",
    "a\x01@example.com",
    "a\t@example.com",
    "é@example.com",
    "a@exämple.com",
    "a" * 300 + "@example.com",
    "Z@Example.COM",
    "a@[1.2.3.4]",
    "b@[1.2.3.4]",
    "tab@example.com\t",
]


def outcome(canon, address: str) -> object:
    try:
        return canon(address)
    except AddressError as e:
        return ("error", str(e))


@pytest.mark.parametrize("case_sensitive", [False, True])
def test_domain_memo_is_the_canonical_form(case_sensitive: bool) -> None:
    store = SuppressionStore(None, case_sensitive_local=case_sensitive)  # type: ignore[arg-type]
    memo = DomainMemo(store.canonical)
    for address in ADDRESSES * 2 + list(reversed(ADDRESSES)):  # cold, then warm
        assert outcome(memo, address) == outcome(store.canonical, address), address
    assert memo.domains  # it did remember


def test_csv_rows_read_as_dict_reader() -> None:
    text = "address,tenant,reason\r\na@x.example,t,r\r\n\r\nb@x.example\r\n"
    text += "c@x.example,t,r,extra\r\n'=d@x,'+t,\"multi\nline\"\r\n"
    ours = list(CsvRows(io.StringIO(text, newline="")))
    theirs = list(csv.DictReader(io.StringIO(text, newline="")))
    assert [r.get("address") for r in ours] == ["a@x.example", "b@x.example", "c@x.example", "=d@x"]
    for a, b in zip(ours, theirs, strict=True):
        for key in ("address", "tenant", "reason"):
            assert a.get(key) == (b[key].lstrip("'") if b[key] else b[key])
