"""The management API's reputation operations (docs/api.md, "Reputation"); ROUTES at the bottom.

Changes need the write scope; the audit event names the token (and the body's ``by``, when
given) and the body's ``reason``.
"""

from __future__ import annotations

import time
from typing import Any

from twisted.internet.defer import inlineCallbacks

from sidecar.http.api import ApiError, Call, Route
from sidecar.http.contract import Body, Param, text
from sidecar.http.schemas import STR, obj, ok
from sidecar.suppression.fields import check_text
from sidecar.units import InvalidValue

R, W = "read", "write"


def _tenant(c: Call) -> str:
    tenant = c.vars["tenant"]
    if not tenant or len(tenant) > 255 or any(ord(ch) < 32 or ord(ch) == 127 for ch in tenant):
        raise ApiError(400, "expected a tenant name of 1 to 255 characters without control characters", "tenant")
    return tenant


def _text(data: dict[str, Any], name: str, max_len: int, required: bool = False) -> str:
    v = data.get(name)
    if v is None and not required:
        return ""
    if not isinstance(v, str) or not v.strip() or len(v) > max_len:
        raise ApiError(400, f"expected a non-empty string of at most {max_len} characters", name)
    try:
        return check_text(name, v, max_len) or ""
    except InvalidValue as e:
        raise ApiError(400, e.message, name) from None


def _who(c: Call, data: dict[str, Any]) -> str:
    ident = c.api.auth.identify(c.request.getHeader(b"authorization"))
    token = f"api token {ident[1] or '(unnamed)'}" if ident else "api"
    by = _text(data, "by", 255)
    return f"{by} ({token})" if by else token


def _level(data: dict[str, Any], name: str, lo: int, hi: int, default: int | None = None) -> int:
    v = data.get(name, default)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ApiError(400, f"expected an integer level from {lo} to {hi}", name)
    return v


def _machine(c: Call) -> Any:
    from sidecar.reputation.levels import LevelMachine

    return LevelMachine(c.api.cfg.reputation)


@inlineCallbacks
def list_reputation(c: Call) -> Any:
    from sidecar.reputation.evaluate import list_tenants

    items = yield c.api.run(list_tenants, c.api.engine)
    return {"items": items}


@inlineCallbacks
def get_reputation(c: Call) -> Any:
    from sidecar.reputation.evaluate import show

    return (yield c.api.run(show, c.api.engine, _machine(c), _tenant(c), time.time()))


@inlineCallbacks
def _change(c: Call, data: dict[str, Any], action: str, to: int | None, **kw: Any) -> Any:
    from sidecar.reputation.evaluate import ReputationError, change

    tenant = _tenant(c)
    why = _text(data, "reason", 1000, required=True)
    held = kw.pop("held", None)
    try:
        who = _who(c, data)
        done = yield c.api.run(
            change, c.api.engine, tenant, action, who, why, time.time(), to=to, held=bool(held), **kw
        )
    except ReputationError as e:
        raise ApiError(409, str(e), "tenant") from None
    out: dict[str, Any] = {"tenant": tenant, "from": done.before, "to": done.after, "reason": done.reason}
    if held is not None:
        from sidecar.reputation.held import act_on_held

        try:
            out.update((yield c.api.run(act_on_held, c.api.cfg, c.api.engine, tenant, held == "delete")))
        except ReputationError as e:
            raise ApiError(502, f"released, but the held messages were not: {e}", "held") from None
    return out


def release_reputation(c: Call) -> Any:
    data = c.body
    to = _level(data, "level", 1, 3, c.api.cfg.reputation.release_to)
    held = data.get("held")
    if held not in (None, "release", "delete"):
        raise ApiError(400, 'expected "release" or "delete"', "held")
    return _change(c, data, "release", to, **({"held": held} if held else {}))


def set_reputation_level(c: Call) -> Any:
    data = c.body
    return _change(c, data, "set-level", _level(data, "level", 1, 5))


def exempt_reputation(c: Call) -> Any:
    data = c.body
    on = data.get("exempt", True)
    if not isinstance(on, bool):
        raise ApiError(400, "expected true or false", "exempt")
    return _change(c, data, "exempt", None, exempt=on)


_NUM_OR_NULL = {"type": ["number", "null"]}
_LEVEL = {"type": "integer", "minimum": 1, "maximum": 5}
TENANT = (Param("tenant", text(255, example="acme"), "the tenant (SASL user, else the sender's domain)", "path"),)
_WHY = {
    "reason": {**text(1000), "minLength": 1, "description": "why (kept in the audit event)"},
    "by": {**text(255), "description": "who (default: the token's name)"},
}


def _body(required: tuple[str, ...], example: dict[str, Any], **props: Any) -> Body:
    schema = {
        "type": "object",
        "required": ["reason", *required],
        "additionalProperties": False,
        "properties": {**_WHY, **props},
    }
    return Body({"application/json": {"schema": schema}}, example=example)


TENANT_LEVEL = obj({"tenant": STR, "level": _LEVEL, "name": STR, "exempt": {"type": "boolean"}})
CHANGED = {200: ok(obj({"tenant": STR, "from": _LEVEL, "to": _LEVEL, "reason": STR}), "The change, as audited")}
RELEASE = _body(
    (),
    {"level": 3, "held": "release", "reason": "list cleaned, ticket 4711"},
    level={"type": "integer", "minimum": 1, "maximum": 3, "description": "default: reputation.release_to"},
    held={"enum": ["release", "delete"], "description": "what to do with the tenant's held messages"},
)
SET_LEVEL = _body(("level",), {"level": 3, "reason": "complaints from a new list"}, level=_LEVEL)
EXEMPT = _body((), {"exempt": True, "reason": "internal transactional tenant"}, exempt={"type": "boolean"})

ROUTES: list[Route] = [
    Route(
        b"GET",
        ("reputation",),
        R,
        list_reputation,
        "Tenants with a reputation level",
        responses={200: ok(obj({"items": {"type": "array", "items": TENANT_LEVEL}}), "Tenants, highest level first")},
    ),
    Route(
        b"GET",
        ("reputation", "{tenant}"),
        R,
        get_reputation,
        "One tenant's level, counts and rates",
        params=TENANT,
        responses={200: ok(TENANT_LEVEL, "The tenant's level, window, counts, rates and held messages")},
    ),
    Route(
        b"POST",
        ("reputation", "{tenant}", "release"),
        W,
        release_reputation,
        "Release a tenant (and its held mail)",
        params=TENANT,
        body=RELEASE,
        responses=CHANGED,
        errors=(409, 502),
    ),
    Route(
        b"POST",
        ("reputation", "{tenant}", "level"),
        W,
        set_reputation_level,
        "Set a tenant's reputation level",
        params=TENANT,
        body=SET_LEVEL,
        responses=CHANGED,
        errors=(409,),
    ),
    Route(
        b"POST",
        ("reputation", "{tenant}", "exempt"),
        W,
        exempt_reputation,
        "Exempt a tenant (or lift it)",
        params=TENANT,
        body=EXEMPT,
        responses=CHANGED,
        errors=(409,),
    ),
]
