"""The import's check in a child process (sidecar.suppression.checker): the same rows and errors as
in-process, a child that dies is an error (never a short import), a child no longer needed is
ended and reaped."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3

import pytest

from sidecar.store.db import make_engine, upgrade
from sidecar.suppression import checker
from sidecar.suppression.rows import CsvRows, check_rows, flatten
from sidecar.suppression.store import SuppressionStore


@pytest.fixture
def forking(monkeypatch):
    """pytest-xdist's worker runs threads of its own; the child needs none of them."""
    monkeypatch.setattr(checker.threading, "active_count", lambda: 1)
    calls = []
    real = checker._from_child
    monkeypatch.setattr(checker, "_from_child", lambda *a: calls.append(1) or real(*a))
    return calls


def _file(tmp_path, text: str):
    p = tmp_path / "in.csv"
    p.write_text(text)
    return open(p, newline="")


def test_the_child_gives_what_the_in_process_check_gives(tmp_path, forking) -> None:
    text = "address,tenant,reason,expires_at\n" + "".join(
        f"U{i}@D{i % 7}.test,t{i % 3},r{i % 5},{'30d' if i % 4 == 0 else ''}\n" for i in range(12_345)
    )
    kw = dict(default_reason="imported", default_tenant="", source="import", now=1e9)
    canon = SuppressionStore(None).canonical  # type: ignore[arg-type]
    with _file(tmp_path, text) as fh:
        ours = list(flatten(checker.checked(CsvRows(fh), canon, **kw)))
    assert forking == [1]
    with _file(tmp_path, text) as fh:
        assert ours == list(check_rows(CsvRows(fh), canon, **kw))
    assert len(ours) == 12_345 and not multiprocessing.active_children()


def test_a_bad_row_found_by_the_child_names_its_line_and_nothing_is_written(tmp_path, forking) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/s.db")
    upgrade(engine)
    text = "address,reason\n" + "".join(f"u{i}@x.test,r\n" for i in range(9_000)) + "u@x.test,bad\x01reason\n"
    with _file(tmp_path, text) as fh, pytest.raises(ValueError, match=r"^line 9002: reason: control character U\+0001"):
        SuppressionStore(engine).import_csv(fh)
    assert forking == [1] and not multiprocessing.active_children()
    with sqlite3.connect(tmp_path / "s.db") as c:
        assert c.execute("SELECT count(*) FROM suppressions").fetchone() == (0,)
        assert c.execute("SELECT count(*) FROM changes").fetchone() == (0,)
    engine.dispose()


def test_a_child_that_dies_is_an_error_not_a_short_import(tmp_path, forking, monkeypatch) -> None:
    real = checker.check_batches

    def dies(rows, canon, **kw):
        yield list(flatten(real(rows, canon, **kw)))[:10]
        os._exit(3)

    monkeypatch.setattr(checker, "check_batches", dies)
    engine = make_engine(f"sqlite:///{tmp_path}/s.db")
    upgrade(engine)
    text = "address\n" + "".join(f"u{i}@x.test\n" for i in range(100))
    with _file(tmp_path, text) as fh, pytest.raises(RuntimeError, match=r"ended unexpectedly \(exit status 3\)"):
        SuppressionStore(engine).import_csv(fh)
    assert SuppressionStore(engine).count() == 0
    engine.dispose()


def test_a_child_no_longer_needed_is_ended(tmp_path, forking) -> None:
    text = "address\n" + "".join(f"u{i}@x.test\n" for i in range(200_000))
    with _file(tmp_path, text) as fh:
        rows = checker.checked(CsvRows(fh), SuppressionStore(None).canonical, now=1e9)  # type: ignore[arg-type]
        assert list(flatten([next(iter(rows))]))[0][0] == "u0@x.test"
        assert len(multiprocessing.active_children()) == 1  # still checking (the pipe is full)
        rows.close()  # type: ignore[attr-defined]
    assert not multiprocessing.active_children()


def test_an_in_memory_file_is_checked_in_process(monkeypatch) -> None:
    import io

    monkeypatch.setattr(checker.threading, "active_count", lambda: 1)
    assert not checker._forkable(CsvRows(io.StringIO("address\na@x.test\n")))
    assert not checker._forkable([{"address": "a@x.test"}])
