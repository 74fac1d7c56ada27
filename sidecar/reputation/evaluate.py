"""Evaluate every tenant's level from the stored counts, and the operator's changes.

Synchronous (the service runs :func:`evaluate_all` in its thread pool; the CLI and the API call
the operator functions directly or through the pool). Every change is a compare-and-set on the
tenant's row plus an audit event in the same transaction (:mod:`sidecar.reputation.store`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

from sidecar import metrics
from sidecar.reputation import store
from sidecar.reputation.levels import Assessment, Level, LevelMachine, TenantState, level_name, release


class ReputationError(ValueError):
    """An operator's change that cannot be made (the message says why)."""


@dataclass(frozen=True)
class Change:
    tenant: str
    before: int
    after: int
    reason: str
    assessment: Assessment | None


def rates(a: Assessment) -> dict[str, Any]:
    return {"bounce_rate": a.bounce_rate, "complaint_rate": a.complaint_rate}


@dataclass
class Evaluation:
    changes: list[Change]
    seen: dict[str, tuple[int, Assessment]]  # every tenant looked at: its level and counts


def evaluate_all(engine: Engine, machine: LevelMachine, now: float) -> Evaluation:
    """Step every tenant with counts in the window or a stored level; write what changed."""
    with engine.connect() as conn:
        stored = store.states(conn)
        counts = store.buckets(conn, now - machine.rc.window)
    changes: list[Change] = []
    seen: dict[str, tuple[int, Assessment]] = {}
    for tenant in sorted(set(stored) | set(counts)):
        old = stored.get(tenant)
        st = old.state if old is not None else TenantState()
        a = machine.assess(counts.get(tenant, ()), now, st.window_start)
        new, t = machine.step(st, a, now)
        seen[tenant] = (int(st.level), a)
        if new == st:
            continue
        reason = t.reason if t is not None else (old.reason if old is not None else "")
        with engine.begin() as conn:
            if not store.write_state(conn, tenant, old, new, reason, now):
                continue  # another relay changed it first: its change stands
            seen[tenant] = (int(new.level), a)
            if t is not None:
                extra = {**rates(a), "volume": a.sends, "hard_bounces": a.hard_bounces, "complaints": a.complaints}
                store.audit(conn, tenant, store.CHANGED, t.before, t.after, t.reason, now, extra=extra)
        if t is not None:
            metrics.REPUTATION_TRANSITIONS.labels(level_name(t.before), level_name(t.after)).inc()
            changes.append(Change(tenant, t.before, t.after, t.reason, a))
    return Evaluation(changes, seen)


def show(engine: Engine, machine: LevelMachine, tenant: str, now: float) -> dict[str, Any]:
    """One tenant: level, times, the counts and rates over its window, held messages."""
    with engine.connect() as conn:
        old = store.states(conn, tenant).get(tenant)
        counts = store.buckets(conn, now - machine.rc.window, tenant).get(tenant, [])
        held = store.held_counts(conn).get(tenant, 0)
    st = old.state if old is not None else TenantState()
    a = machine.assess(counts, now, st.window_start)
    return {
        "tenant": tenant,
        "level": int(st.level),
        "name": level_name(st.level),
        "since": st.since or None,
        "reason": old.reason if old is not None else "",
        "exempt": st.exempt,
        "window_start": st.window_start or None,
        "calm_since": st.calm_since,
        "held": held,
        **a.as_dict(),
    }


def list_tenants(engine: Engine) -> list[dict[str, Any]]:
    """Tenants with a stored level (above normal, exempt, or once changed), highest level first."""
    with engine.connect() as conn:
        stored = store.states(conn)
        held = store.held_counts(conn)
    order = sorted(stored, key=lambda t: (-stored[t].state.level, t))
    return [
        {
            "tenant": t,
            "level": int(s.state.level),
            "name": level_name(s.state.level),
            "since": s.state.since or None,
            "exempt": s.state.exempt,
            "held": held.get(t, 0),
            "reason": s.reason,
        }
        for t in order
        for s in (stored[t],)
    ]


def change(
    engine: Engine,
    tenant: str,
    action: str,
    who: str,
    why: str,
    now: float,
    *,
    to: int | None = None,
    exempt: bool | None = None,
    held: bool = False,
) -> Change:
    """An operator's change. ``action``: "release" (to ``to``), "set-level" (to ``to``) or "exempt".

    A release of a tenant already at or under ``to`` is refused, unless ``held`` (its held
    messages are released too): then only that is audited.
    """
    if not tenant:
        raise ReputationError("tenant: expected a tenant name")
    if not why.strip():
        raise ReputationError("reason: say why (it is kept in the audit event)")
    with engine.begin() as conn:
        old = store.states(conn, tenant).get(tenant)
        st = old.state if old is not None else TenantState()
        if action == "release":
            assert to is not None
            if not Level.NORMAL <= to <= Level.THROTTLE:
                raise ReputationError("to: a release goes to level 1, 2 or 3")
            if st.level <= to and not held:
                raise ReputationError(f"{tenant} is at level {st.level} ({level_name(st.level)}): nothing to release")
            new = release(st, to, now) if st.level > to else st
            kind = store.RELEASED
        elif action == "set-level":
            assert to is not None
            if not Level.NORMAL <= to <= Level.PAUSE:
                raise ReputationError("level: expected 1 to 5")
            new = TenantState(to, now, None, st.window_start, st.exempt)
            kind = store.CHANGED
        elif action == "exempt":
            on = True if exempt is None else exempt
            new = TenantState(Level.NORMAL if on else st.level, now if on else st.since, None, now, on)
            kind = store.CHANGED
        else:  # pragma: no cover - the callers pass one of the three
            raise ReputationError(f"unknown action {action!r}")
        reason = f"{action} by {who}: {why}"
        if not store.write_state(conn, tenant, old, new, reason, now):
            raise ReputationError(f"{tenant} changed meanwhile: try again")
        extra: dict[str, Any] = {"action": action, "why": why, "exempt": new.exempt}
        store.audit(conn, tenant, kind, int(st.level), int(new.level), reason, now, who=who, extra=extra)
    if new.level != st.level:
        metrics.REPUTATION_TRANSITIONS.labels(level_name(st.level), level_name(new.level)).inc()
    return Change(tenant, int(st.level), int(new.level), reason, None)
