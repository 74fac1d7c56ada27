"""The OpenAPI 3.1 description served at /openapi.json, built from the route table."""

from __future__ import annotations

from typing import Any

from sidecar.config import WEBHOOK_EVENTS

STR = {"type": "string"}
INT = {"type": "integer"}
WHEN = {"type": "string", "description": 'ISO 8601 time, POSIX seconds, or a duration ("24h" = that long ago)'}


def _p(
    name: str,
    schema: dict[str, Any],
    desc: str = "",
    where: str = "query",
    required: bool = False,
) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required or where == "path", "schema": schema, "description": desc}


PAGE = [_p("cursor", STR, "next_cursor of the previous page"), _p("limit", {**INT, "maximum": 1000, "default": 100})]
SUP_FILTERS = [
    _p("reason", STR),
    _p("category", STR),
    _p("tenant", STR, '"" = global only'),
    _p("since", WHEN, "created at or after"),
    _p("until", WHEN, "created before"),
    _p("prefix", STR, "address starts with"),
    _p("active", {"enum": ["true", "false", "all"], "default": "true"}),
]
PARAMS: dict[tuple[str, str], list[dict[str, Any]]] = {
    ("GET", "/suppressions"): SUP_FILTERS + PAGE,
    ("GET", "/suppressions/export"): SUP_FILTERS + [_p("format", {"enum": ["csv", "jsonl"], "default": "csv"})],
    ("POST", "/suppressions/import"): [
        _p("format", {"enum": ["csv", "jsonl"]}, "default from Content-Type"),
        _p("reason", STR, "for rows without one"),
        _p("tenant", STR, "for rows without one"),
        _p("expires_at", WHEN, "for rows without one (a duration counts from now)"),
    ],
    ("DELETE", "/suppressions/{address}"): [_p("tenant", STR, "scope to remove from (default global)")],
    ("GET", "/events"): [
        _p("kind", {"enum": ["bounce", "delay", "complaint", "auto-reply", "delivered", "ratelimit", "domain"]}),
        _p("address", STR),
        _p("tenant", STR),
        _p("category", STR),
        _p("since", WHEN),
        _p("until", WHEN),
    ]
    + PAGE,
    ("GET", "/stats"): [_p("since", {**WHEN, "default": "24h"}), _p("until", WHEN)],
    ("GET", "/webhooks/deliveries"): [
        _p("subscription", STR),
        _p("status", {"enum": ["pending", "delivered", "dead"]}),
        _p("event_type", {"enum": list(WEBHOOK_EVENTS)}),
        _p("address", STR),
    ]
    + PAGE,
}
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/suppressions"): {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["address"],
                "additionalProperties": False,
                "properties": {
                    "address": STR,
                    "tenant": STR,
                    "reason": {**STR, "default": "manual"},
                    "category": STR,
                    "note": STR,
                    "expires_at": WHEN,
                },
            }
        }
    },
    ("POST", "/suppressions/import"): {"text/csv": {"schema": STR}, "application/x-ndjson": {"schema": STR}},
    ("POST", "/webhooks/redeliver"): {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["from_id"],
                "additionalProperties": False,
                "properties": {
                    "from_id": INT,
                    "to_id": INT,
                    "subscription": STR,
                    "status": {"enum": ["delivered", "dead"]},
                },
            }
        }
    },
}
ERROR = {
    "description": "error",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {
                    "error": {"type": "object", "properties": {"message": STR, "field": {"type": ["string", "null"]}}}
                },
            }
        }
    },
}


def spec(routes: list[Any]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for r in routes:
        path = "/" + "/".join(r.parts)
        method = r.method.decode()
        op: dict[str, Any] = {
            "summary": r.summary,
            "operationId": r.handler.__name__,
            "security": [{"bearer": []}],
            "x-scope": r.scope,
            "responses": {
                "200": {"description": "OK"},
                "400": ERROR,
                "401": ERROR,
                "403": ERROR,
                "404": ERROR,
                "413": ERROR,
            },
        }
        params = [_p(p[1:-1], STR, where="path") for p in r.parts if p.startswith("{")]
        params += PARAMS.get((method, path), [])
        if params:
            op["parameters"] = params
        if (method, path) in BODIES:
            op["requestBody"] = {"required": True, "content": BODIES[(method, path)]}
        paths.setdefault(path, {})[method.lower()] = op
    paths["/healthz"] = {
        "get": {
            "summary": "Readiness (no token needed)",
            "security": [],
            "responses": {"200": {"description": "ready"}, "503": {"description": "not ready"}},
        }
    }
    paths["/metrics"] = {
        "get": {
            "summary": "Prometheus metrics (no token needed)",
            "security": [],
            "responses": {"200": {"description": "text exposition format"}},
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "postfix-sidecar management API",
            "version": "1",
            "description": "Suppressions, events, rate limits, stats and webhook deliveries. "
            "Bearer tokens from [[api.tokens]]: scope read for GET, write for the rest.",
        },
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "paths": paths,
    }
