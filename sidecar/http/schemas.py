"""Each management API operation's parameters, body and success responses (JSON Schema).

:data:`sidecar.http.handlers.ROUTES` attaches them to the routes; see :mod:`sidecar.http.contract`.
"""

from __future__ import annotations

import re
from typing import Any

from sidecar.config import WEBHOOK_EVENTS
from sidecar.http.contract import ADDRESS, FUTURE, FUTURE_BODY, INT_ID, NO_CONTROL, PAST, Body, Param, text
from sidecar.http.queries import EVENT_KINDS, MAX_PAGE

STR = {"type": "string"}
NSTR = {"type": ["string", "null"]}
INT = {"type": "integer"}


def obj(required: dict[str, Any], **optional: Any) -> dict[str, Any]:
    """An object with these properties (``required`` always present; others may be added later)."""
    return {"type": "object", "required": list(required), "properties": {**required, **optional}}


def ok(schema: dict[str, Any], description: str = "OK", media: str = "application/json") -> dict[str, Any]:
    return {"description": description, "content": {media: {"schema": schema}}}


def page_of(item: dict[str, Any]) -> dict[str, Any]:
    return obj({"items": {"type": "array", "items": item}, "next_cursor": NSTR})


# -- parameters -------------------------------------------------------------------------------------

LIMIT = Param("limit", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 100}, "page size")
CURSOR = Param("cursor", text(256), "next_cursor of the previous page")
ID_CURSOR = Param("cursor", {**INT_ID, "description": "next_cursor of the previous page"})
SUPPRESSION_FILTERS = (
    Param("reason", text(64)),
    Param("category", text(32)),
    Param("tenant", text(255), '"" = global only'),
    Param("since", PAST, "created at or after"),
    Param("until", PAST, "created before"),
    Param("prefix", text(320), "address starts with"),
    Param("active", {"enum": ["true", "false", "all"], "default": "true"}),
)
FORMAT = Param("format", {"enum": ["csv", "jsonl"], "default": "csv"})
LIST_SUPPRESSIONS = (*SUPPRESSION_FILTERS, CURSOR, LIMIT)
EXPORT_SUPPRESSIONS = (*SUPPRESSION_FILTERS, FORMAT)
IMPORT_SUPPRESSIONS = (
    Param("format", {"enum": ["csv", "jsonl"]}, "default: jsonl for Content-Type application/x-ndjson, else csv"),
    Param("reason", text(64), "for rows without one (default imported)"),
    Param("tenant", text(255), "for rows without one (default global)"),
    Param("expires_at", FUTURE, "for rows without one"),
)
ADDRESS_PATH = Param("address", ADDRESS, "an address (case rules: suppression.local_part_case_sensitive)", "path")
REMOVE_SUPPRESSION = (ADDRESS_PATH, Param("tenant", text(255), "scope to remove from (default global)"))
LIST_EVENTS = (
    Param("kind", {"enum": list(EVENT_KINDS)}),
    Param("address", ADDRESS),
    Param("tenant", text(255)),
    Param("category", text(32)),
    Param("since", PAST),
    Param("until", PAST),
    ID_CURSOR,
    LIMIT,
)
MESSAGE_ID = (Param("id", {**INT_ID, "example": 1}, "a stored message's id (events' message_id)", "path"),)


def limit_key_schema(cfg: Any) -> dict[str, Any]:
    """RULE:VALUE where RULE is one of this server's rate-limit rules (none configured: no key)."""
    names = [r.name for r in cfg.ratelimit.rules]
    rule = "(?:" + "|".join(re.escape(n) for n in names) + ")" if names else "(?!)"
    return {
        "type": "string",
        "maxLength": 512,
        "pattern": "^" + rule + ":" + NO_CONTROL[1:],
        "description": f"RULE:VALUE with a configured rule ({', '.join(names) or 'none configured'})",
        "example": f"{names[0] if names else 'RULE'}:alice",
    }


LIMIT_KEY = (
    Param(
        "key",
        {"type": "string", "maxLength": 512, "pattern": "^[^:]+:" + NO_CONTROL[1:]},
        "RULE:VALUE, with a configured rule's name",
        "path",
        from_config=limit_key_schema,
    ),
)
STATS = (Param("since", {**PAST, "default": "24h"}), Param("until", {**PAST, "description": "default: now"}))
LIST_DELIVERIES = (
    Param("subscription", text(255)),
    Param("status", {"enum": ["pending", "delivered", "dead"]}),
    Param("event_type", {"enum": list(WEBHOOK_EVENTS)}),
    Param("address", text(512)),
    ID_CURSOR,
    LIMIT,
)

# -- bodies -----------------------------------------------------------------------------------------

ADD_SUPPRESSION = Body(
    {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["address"],
                "additionalProperties": False,
                "properties": {
                    "address": ADDRESS,
                    "tenant": text(255, "scope (default: global)"),
                    "reason": text(64, default="manual"),
                    "category": text(32),
                    "note": text(4000),
                    "expires_at": FUTURE_BODY,
                },
            }
        }
    },
    example={"address": "bob@example.com", "reason": "manual", "note": "asked by support", "expires_at": "90d"},
)
IMPORT_BODY = Body(
    {"text/csv": {"schema": STR}, "application/x-ndjson": {"schema": STR}},
    example="address,reason\nbob@example.com,manual\n",
)
REDELIVER = Body(
    {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["from_id"],
                "additionalProperties": False,
                "properties": {
                    "from_id": {**INT_ID, "description": "the first delivery id to send again"},
                    "to_id": INT_ID,
                    "subscription": text(255),
                    "status": {"enum": ["delivered", "dead"], "description": "leave out for both"},
                },
            }
        }
    },
    example={"from_id": 1, "status": "dead"},
)

# -- responses --------------------------------------------------------------------------------------

SUPPRESSION = obj(
    {"id": INT, "address": STR, "tenant": STR, "reason": STR, "active": {"type": "boolean"}},
    category=NSTR,
    source=NSTR,
    note=NSTR,
    created_at=NSTR,
    updated_at=NSTR,
    expires_at=NSTR,
)
OPENAPI = {200: ok(obj({"openapi": STR, "paths": {"type": "object"}}), "This description (OpenAPI 3.1)")}
SUPPRESSION_PAGE = {200: ok(page_of(SUPPRESSION), "A page of suppressions")}
SUPPRESSION_ADDED = {201: ok(SUPPRESSION, "The suppression as stored (created or updated)")}
SUPPRESSION_WHY = {
    200: ok(
        obj(
            {
                "address": STR,
                "suppressions": {
                    "type": "array",
                    "items": obj({**SUPPRESSION["properties"], "causes": {"type": "array"}}),
                },
                "history": {"type": "array", "items": {"type": "object"}},
            }
        ),
        "Every suppression row of the address with its causes, and its history",
    )
}
SUPPRESSION_REMOVED = {200: ok(obj({"address": STR, "tenant": STR, "removed": {"const": True}}), "Removed")}
IMPORTED = {200: ok(obj({"imported": INT}), "Rows imported (all or nothing)")}
EXPORTED = {
    200: {
        "description": "The suppressions, streamed",
        "content": {"text/csv": {"schema": STR}, "application/x-ndjson": {"schema": STR}},
    }
}
EVENT_PAGE = {200: ok(page_of(obj({"id": INT, "kind": STR})), "A page of events")}
RAW_MESSAGE = {200: ok(STR, "The raw message as received", "message/rfc822")}
LIMIT_USAGE = {200: ok(obj({"key": STR, "windows": {"type": "array", "items": {"type": "object"}}}), "Use per window")}
LIMIT_RESET = {200: ok(obj({"key": STR, "reset": {"const": True}, "rows": INT}, redis_keys=INT), "Reset")}
COUNT_ROWS = {"type": "array", "items": obj({"count": INT})}
STATS_REPLY = {
    200: ok(
        obj(
            {"since": STR, "until": STR, "events": COUNT_ROWS, "suppressions_added": COUNT_ROWS},
            active_suppressions={},
        ),
        "Counts over [since, until)",
    )
}
WEBHOOKS = {
    200: ok(
        obj(
            {
                "subscriptions": {
                    "type": "array",
                    "items": obj({"name": STR, "url": STR, "events": {"type": "array"}}),
                },
                "deliveries": {"type": "array", "items": obj({"subscription": STR, "status": STR, "count": INT})},
                "cursors": {"type": "array", "items": {"type": "object"}},
            }
        ),
        "Subscriptions, delivery counts and cursors",
    )
}
DELIVERY_PAGE = {200: ok(page_of(obj({"id": INT})), "A page of deliveries")}
REDELIVERED = {200: ok(obj({"queued": INT}), "Deliveries queued again")}


# -- each route's contract: Route(method, parts, scope, handler, summary, **X_OP) ------------------
OPENAPI_OP: dict[str, Any] = {"responses": OPENAPI, "tags": ("service",)}
LIST_SUPPRESSIONS_OP: dict[str, Any] = {"params": LIST_SUPPRESSIONS, "responses": SUPPRESSION_PAGE}
ADD_SUPPRESSION_OP: dict[str, Any] = {"body": ADD_SUPPRESSION, "responses": SUPPRESSION_ADDED}
EXPORT_OP: dict[str, Any] = {"params": EXPORT_SUPPRESSIONS, "responses": EXPORTED}
IMPORT_OP: dict[str, Any] = {"params": IMPORT_SUPPRESSIONS, "body": IMPORT_BODY, "responses": IMPORTED}
WHY_OP: dict[str, Any] = {"params": (ADDRESS_PATH,), "responses": SUPPRESSION_WHY}
REMOVE_OP: dict[str, Any] = {"params": REMOVE_SUPPRESSION, "responses": SUPPRESSION_REMOVED}
EVENTS_OP: dict[str, Any] = {"params": LIST_EVENTS, "responses": EVENT_PAGE}
MESSAGE_OP: dict[str, Any] = {"params": MESSAGE_ID, "responses": RAW_MESSAGE}
LIMIT_OP: dict[str, Any] = {"params": LIMIT_KEY, "responses": LIMIT_USAGE}
LIMIT_RESET_OP: dict[str, Any] = {"params": LIMIT_KEY, "responses": LIMIT_RESET}
STATS_OP: dict[str, Any] = {"params": STATS, "responses": STATS_REPLY}
WEBHOOKS_OP: dict[str, Any] = {"responses": WEBHOOKS}
DELIVERIES_OP: dict[str, Any] = {"params": LIST_DELIVERIES, "responses": DELIVERY_PAGE}
REDELIVER_OP: dict[str, Any] = {"body": REDELIVER, "responses": REDELIVERED}
