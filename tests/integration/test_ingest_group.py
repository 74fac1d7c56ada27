"""Group commit (sidecar.bounce.group.record_group) on a real SQLite file: several hand-offs in one
transaction, each member's own outcome, and what a failing member or database does to the others."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from sidecar.bounce.derive import Outcome
from sidecar.bounce.envelope import Envelope
from sidecar.bounce.group import record_group
from sidecar.bounce.record import Recorder, open_recorder
from sidecar.config import load_config
from tests.harness.ingest import HARD, SOFT, q, variant

ENV = Envelope("MAILER-DAEMON", "bounces@bounce.example", "GRP1")


@pytest.fixture
def recorder(tmp_path: Path) -> Any:
    cfg = load_config(None, {"database.url": f"sqlite:///{tmp_path / 's.db'}", "ingest.require_corroboration": False})
    rec = open_recorder(cfg)
    yield rec
    rec.engine.dispose()


def db(rec: Recorder) -> Path:
    return Path(str(rec.engine.url.database))


def test_a_group_is_recorded_in_one_go_with_each_members_outcome(recorder: Recorder) -> None:
    first = recorder.record(variant(HARD, 0), ENV)  # recorded before: a duplicate in the group
    items = [(variant(HARD, n), ENV) for n in (1, 2, 0, 3)] + [(variant(HARD, 1), ENV)]  # and one twice within it
    out = record_group(recorder, items)
    assert all(isinstance(o, Outcome) for o in out), out
    states = [(o.outcome, o.message_id) for o in out]  # type: ignore[union-attr]
    assert states[2] == ("duplicate", first.message_id)
    assert states[4] == ("duplicate", None)  # the same bytes earlier in the same transaction
    assert [s for s, _ in states[:2]] == ["parsed", "parsed"] and states[3][0] == "parsed"
    ids = {mid for _, mid in states if mid is not None}
    assert len(ids) == 4
    assert q(db(recorder), "select count(*) from raw_messages") == [(4,)]
    assert q(db(recorder), "select count(*) from events") == [(4,)]


def test_soft_bounces_in_one_group_count_each_other(recorder: Recorder) -> None:
    out = record_group(recorder, [(variant(SOFT, n), ENV) for n in range(3)])
    assert [o.decisions[0][1] for o in out] == ["soft", "soft", "suppress-soft"]  # type: ignore[union-attr]
    assert q(db(recorder), "select reason from suppressions") == [("soft bounces",)]


def test_a_member_that_cannot_be_parsed_fails_alone(recorder: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    real = recorder.derive

    def derive(raw: bytes, env: Envelope) -> Any:
        if b"X-Test-Variant: 1\n" in raw:
            raise ValueError("parser crashed")
        return real(raw, env)

    monkeypatch.setattr(recorder, "derive", derive)
    out = record_group(recorder, [(variant(HARD, n), ENV) for n in range(3)])
    assert isinstance(out[1], ValueError)
    assert [o.outcome for o in (out[0], out[2])] == ["parsed", "parsed"]  # type: ignore[union-attr]
    assert q(db(recorder), "select count(*) from raw_messages") == [(2,)]


def test_a_member_whose_write_fails_does_not_take_the_others_with_it(
    recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = recorder.write

    def write(conn: Any, item: Any, now: float) -> Outcome:
        if b"X-Test-Variant: 2\n" in item.raw:
            raise ValueError("a value the database refuses")
        return real(conn, item, now)

    monkeypatch.setattr(recorder, "write", write)
    out = record_group(recorder, [(variant(HARD, n), ENV) for n in range(4)])
    assert isinstance(out[2], ValueError)
    assert all(isinstance(out[n], Outcome) and out[n].outcome == "parsed" for n in (0, 1, 3)), out
    assert q(db(recorder), "select count(*) from raw_messages") == [(3,)]


def test_the_database_failing_answers_every_member_and_records_none(
    recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = recorder.write
    calls = []

    def write(conn: Any, item: Any, now: float) -> Outcome:
        calls.append(item)
        out = real(conn, item, now)
        if len(calls) == 3:
            raise OperationalError("COMMIT", {}, Exception("database is locked"))
        return out

    monkeypatch.setattr(recorder, "write", write)
    out = record_group(recorder, [(variant(HARD, n), ENV) for n in range(3)])
    assert all(isinstance(o, OperationalError) for o in out), out
    assert len(calls) == 3  # not tried again one by one: the database itself failed
    assert q(db(recorder), "select count(*) from raw_messages") == [(0,)]  # the first two rolled back with it
