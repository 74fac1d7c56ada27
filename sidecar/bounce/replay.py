"""``sidecar replay``: re-run parsing and the suppression policy over stored raw messages.

For each message (oldest first) the stored bytes are parsed again and the result compared
with the message's current events:

* a recipient whose parse result is unchanged keeps its event (and decision);
* a new or changed one gets a new event, decided by the current policy at the message's
  original time (so soft-bounce windows and expiries stay historical);
* an event the parser no longer produces is marked ``superseded``: never deleted, so the
  causes of existing suppressions keep their exact answer. Suppressions are never removed
  by replay (lift them with ``sidecar suppressions remove``).

Without ``--apply`` the same work runs in a transaction that is rolled back, so the report
shows exactly what ``--apply`` would do (per message: soft counts across several changed
messages may differ slightly, since earlier messages' changes were not kept). Applying
twice changes nothing the second time.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import IO, Any

from sqlalchemy import select, update

from sidecar.bounce.derive import Decision, Derived, EventKind, Finding, MessageState, Outcome
from sidecar.bounce.envelope import Envelope
from sidecar.bounce.record import Recorder
from sidecar.store.models import Event, RawMessage

_SUPPRESSING = (Decision.SUPPRESS_HARD, Decision.SUPPRESS_SOFT, Decision.SUPPRESS_COMPLAINT)


@dataclass
class MessageChange:
    id: int
    queue_id: str | None
    state: tuple[str, str]
    added: list[dict[str, Any]] = field(default_factory=list)
    removed: list[dict[str, Any]] = field(default_factory=list)
    changed: list[dict[str, Any]] = field(default_factory=list)
    suppressions: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def empty(self) -> bool:
        return self.state[0] == self.state[1] and not (self.added or self.removed or self.changed)


@dataclass
class ReplayStats:
    examined: int = 0
    changed: int = 0
    added: int = 0
    removed: int = 0
    suppressions: int = 0
    errors: int = 0
    applied: bool = False

    def summary(self) -> str:
        tail = "applied" if self.applied else "dry run: nothing written; use --apply to apply"
        return (
            f"{self.examined} messages examined, {self.changed} changed: +{self.added} / -{self.removed} "
            f"recipient events, {self.suppressions} new suppressions, {self.errors} parser errors ({tail})"
        )


def _messages(recorder: Recorder, state: str, chunk: int = 500) -> Iterator[Any]:
    t = RawMessage.__table__.c
    q = select(
        t.id,
        t.queue_id,
        t.envelope_sender,
        t.envelope_recipient,
        t.extension,
        t.size,
        t.received_at,
        t.state,
        t.content,
    ).order_by(t.id)
    if state == "parsed":
        q = q.where(t.state == MessageState.PARSED)
    elif state == "unparsed":
        q = q.where(t.state != MessageState.PARSED)
    last = 0
    while True:
        with recorder.engine.connect() as conn:
            rows = conn.execute(q.where(t.id > last).limit(chunk)).all()
        yield from rows
        if len(rows) < chunk:
            return
        last = rows[-1].id


def _event_finding(e: Any) -> Finding:
    return Finding(
        address=e.address,
        tenant=e.tenant,
        kind=EventKind(e.kind),
        category=e.category,
        reason=e.reason,
        hard=e.hard,
        status=e.status,
    )


def _brief(f: Finding, decision: str | None = None) -> dict[str, Any]:
    d = {"address": f.address, "kind": f.kind, "category": f.category, "hard": f.hard, "status": f.status}
    if f.tenant:
        d["tenant"] = f.tenant
    if decision:
        d["decision"] = decision
    return d


def replay_one(recorder: Recorder, row: Any, apply: bool) -> MessageChange:
    env = Envelope(
        sender=row.envelope_sender or "",
        recipient=row.envelope_recipient or "",
        queue_id=row.queue_id or "",
        extension=row.extension or "",
        size=row.size,
    )
    raw = zlib.decompress(row.content)
    try:
        d: Derived = recorder.derive(raw, env)
    except Exception as e:
        return MessageChange(row.id, row.queue_id, (row.state, row.state), error=f"{type(e).__name__}: {e}")
    recorder.assess(d, row.received_at)  # record look-ups, before the transaction
    ch = MessageChange(row.id, row.queue_id, (row.state, d.state))
    ec = Event.__table__.c
    with recorder.engine.connect() as conn:
        trans = conn.begin()
        try:
            old = conn.execute(
                select(ec.id, ec.address, ec.tenant, ec.kind, ec.category, ec.reason, ec.hard, ec.status)
                .where(ec.message_id == row.id, ec.decision != Decision.SUPERSEDED, ec.kind != EventKind.CAP_REACHED)
                .order_by(ec.id)
            ).all()
            pending = {ev.id: _event_finding(ev) for ev in old}
            added: list[Finding] = []
            for f in d.findings:
                match = next((i for i, o in pending.items() if o.key() == f.key()), None)
                if match is None:
                    added.append(f)
                else:
                    del pending[match]
            if pending:
                conn.execute(update(Event).where(ec.id.in_(list(pending))).values(decision=Decision.SUPERSEDED))
            out = Outcome(d.state, row.id)
            recorder.apply(conn, d, row.id, row.received_at, out, findings=added)
            decisions = dict(out.decisions)
            gone = list(pending.values())
            for f in added:
                prev = next((g for g in gone if g.address == f.address and g.kind == f.kind), None)
                if prev is not None:
                    gone.remove(prev)
                    ch.changed.append(
                        {"address": f.address, "from": _brief(prev), "to": _brief(f, decisions.get(f.address))}
                    )
                else:
                    ch.added.append(_brief(f, decisions.get(f.address)))
            ch.removed = [_brief(g) for g in gone]
            ch.suppressions = [a for a, dec in out.decisions if dec in _SUPPRESSING]  # not "(covered)" etc.
            if row.state != d.state or added or pending:
                conn.execute(
                    update(RawMessage)
                    .where(RawMessage.id == row.id)
                    .values(state=d.state, kind=d.kind, parser_version=d.parser_version, error=d.error)
                )
            if apply:
                trans.commit()
            else:
                trans.rollback()
        except BaseException:
            trans.rollback()
            raise
    return ch


def _text(ch: MessageChange) -> list[str]:
    head = f"message {ch.id} (queue {ch.queue_id or '-'})"
    if ch.error:
        return [f"{head}: parser error: {ch.error}"]
    lines = [head + (f": {ch.state[0]} -> {ch.state[1]}" if ch.state[0] != ch.state[1] else ":")]
    for a in ch.added:
        lines.append(f"  + {a['address']} {a['kind']} {a['category'] or '-'} hard={a['hard']} -> {a.get('decision')}")
    for r in ch.removed:
        lines.append(f"  - {r['address']} {r['kind']} {r['category'] or '-'} hard={r['hard']}")
    for c in ch.changed:
        lines.append(
            f"  ~ {c['address']} {c['from']['kind']}/{c['from']['category']}/hard={c['from']['hard']} -> "
            f"{c['to']['kind']}/{c['to']['category']}/hard={c['to']['hard']} -> {c['to'].get('decision')}"
        )
    for s in ch.suppressions:
        lines.append(f"  ! new suppression: {s}")
    return lines


def replay(
    recorder: Recorder, *, state: str = "all", apply: bool = False, as_json: bool = False, out: IO[str] | None = None
) -> ReplayStats:
    stats = ReplayStats(applied=apply)
    for row in _messages(recorder, state):
        stats.examined += 1
        ch = replay_one(recorder, row, apply)
        if ch.error:
            stats.errors += 1
        elif ch.empty:
            continue
        else:
            stats.changed += 1
            stats.added += len(ch.added) + len(ch.changed)
            stats.removed += len(ch.removed) + len(ch.changed)
            stats.suppressions += len(ch.suppressions)
        if out is not None:
            if as_json:
                out.write(json.dumps({**asdict(ch), "state": list(ch.state)}) + "\n")
            else:
                out.write("\n".join(_text(ch)) + "\n")
    if out is not None:
        out.write((json.dumps({"summary": asdict(stats)}) if as_json else stats.summary()) + "\n")
    return stats
