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


CSV_CASES = [
    "address,tenant,reason,category,created_at,expires_at,source,note\r\n"
    'A@Example.COM,acme, hard ,policy,2026-01-02T03:04:05Z,30d,crm,"a, b"\r\n'
    "b@example.com,,,,,never,,\r\n"
    "'=c@example.com,'+t,'-r,,,,,'@n\r\n"
    "o'brien@example.com,t'x,r,,,,,\r\n",
    "address,reason\nshort@example.com\n\nlong@example.com,r3,extra,cells\n",  # short, blank, long
    'address\n<d@example.com>\n"""q r""@Example.com"\né@exämple.com\nx+Tag@EXAMPLE.com.\n',
    'address\nm@example.com,"an ignored\nextra cell"\nn@example.com\n',
]


@pytest.mark.parametrize("text", CSV_CASES)
@pytest.mark.parametrize("case_sensitive", [False, True])
def test_csv_fast_path_gives_what_the_dict_rows_give(text: str, case_sensitive: bool) -> None:
    from sidecar.suppression.rows import check_rows

    canon = SuppressionStore(None, case_sensitive_local=case_sensitive).canonical  # type: ignore[arg-type]
    kw = dict(default_reason="imported", default_tenant="dflt", default_expires=5.0, source="import", now=1e9)
    fast = list(check_rows(CsvRows(io.StringIO(text, newline="")), canon, **kw))
    generic = list(check_rows(iter(list(CsvRows(io.StringIO(text, newline="")))), canon, **kw))
    assert fast == generic and len(fast) >= 2


BAD_CSV = [
    ("address,reason\nok@example.com,r\nbroken,r\n", "line 3: address: 'broken': no '@' in address"),
    ('address,note\nok@example.com,fine\nx@example.com,"two\nlines"\n', "line 3: note: control character U+000A"),
    ('address\nok@example.com,"an ignored\nextra cell"\nbad\n', "line 4: address: 'bad': no '@' in address"),
    ("address,reason\nok@example.com," + "r" * 65 + "\n", "line 2: reason: longer than 64 characters"),
    ("address,expires_at\nok@example.com,tomorrow-ish\n", "line 2: expires_at:"),
    ("address,tenant\nok@example.com,a\x85b\n", "line 2: tenant: control character U+0085"),
    ("address,address\nok@example.com,bad\n", "line 2: address:"),  # repeated column: the general path
]


@pytest.mark.parametrize(("text", "message"), BAD_CSV)
def test_a_bad_csv_row_names_its_line_and_field(text: str, message: str) -> None:
    from sidecar.suppression.rows import check_rows

    with pytest.raises(ValueError) as e:
        list(check_rows(CsvRows(io.StringIO(text, newline="")), now=1e9))
    assert str(e.value).startswith(message), str(e.value)


def _random_csv(seed: int, n: int) -> str:
    import random

    rnd = random.Random(seed)
    domains = ["example.com", "Example.COM", "x.test.", "b.example", "UPPER.TEST", "[1.2.3.4]", "exämple.com"]
    lines = ["address,tenant,reason,category,created_at,expires_at,source,note"]
    for i in range(n):
        local = rnd.choice(["u", "U", "first.last", "o'brien", "a+tag", "=x", "q"]) + str(i)
        row = [
            f"{local}@{rnd.choice(domains)}",
            rnd.choice(["", "", "", "acme"]) if rnd.random() < 0.3 else "",
            "hard" if rnd.random() < 0.9 else rnd.choice(["soft", " spaced "]),
            "" if rnd.random() < 0.95 else "policy",
            "" if rnd.random() < 0.97 else "2026-01-02T03:04:05Z",
            "" if rnd.random() < 0.97 else "30d",
            "",
            "" if rnd.random() < 0.98 else "'=formula",
        ]
        lines.append(",".join(row))
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("batch", [1, 2, 3, 64, 2000])
@pytest.mark.parametrize("case_sensitive", [False, True])
def test_batches_give_what_the_rows_give(monkeypatch, batch: int, case_sensitive: bool) -> None:
    """The batch check (sidecar.suppression.batch_check) gives the per-row values, whatever the
    batch size; a file of uniform rows does take the batch path."""
    from sidecar.suppression import batch_check, rows
    from sidecar.suppression.rows import check_rows

    monkeypatch.setattr(rows, "CHECK_BATCH", batch)
    taken = []
    real = batch_check.fast_batch
    monkeypatch.setattr(batch_check, "fast_batch", lambda *a: taken.append(r := real(*a)) or r)
    canon = SuppressionStore(None, case_sensitive_local=case_sensitive).canonical  # type: ignore[arg-type]
    kw = dict(default_reason="imported", default_tenant="dflt", default_expires=5.0, source="import", now=1e9)
    for text in [_random_csv(seed, 500) for seed in range(3)] + CSV_CASES:
        fast = list(check_rows(CsvRows(io.StringIO(text, newline="")), canon, **kw))
        generic = list(check_rows(iter(list(CsvRows(io.StringIO(text, newline="")))), canon, **kw))
        assert fast == generic
    d = "d" if case_sensitive else "D"  # case-sensitive local parts: the batch path wants lower-case domains
    uniform = "address,reason\n" + "".join(f"u{i}@{d}{i % 3}.example,r\n" for i in range(batch * 4))
    taken.clear()
    fast = list(check_rows(CsvRows(io.StringIO(uniform, newline="")), canon, **kw))
    assert fast == list(check_rows(iter(list(CsvRows(io.StringIO(uniform, newline="")))), canon, **kw))
    assert any(t is not None for t in taken)  # the domains learnt, later batches went through whole


@pytest.mark.parametrize("batch", [2, 2000])
def test_a_bad_row_in_a_batch_names_its_line(monkeypatch, batch: int) -> None:
    from sidecar.suppression import rows
    from sidecar.suppression.rows import check_rows

    monkeypatch.setattr(rows, "CHECK_BATCH", batch)
    text = "address,reason\n" + "".join(f"u{i}@x.test,r\n" for i in range(10)) + "\n" + "u@x.test,bad\x7f\n"
    with pytest.raises(ValueError, match=r"^line 13: reason: control character U\+007F"):
        list(check_rows(CsvRows(io.StringIO(text, newline="")), now=1e9))
