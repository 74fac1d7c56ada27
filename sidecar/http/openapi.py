"""The OpenAPI 3.1 description served at /openapi.json, made from the route table's contracts.

Request validation (:mod:`sidecar.http.contract`) reads the same ``Route`` fields, so the
description and the server's behaviour come from one source.
"""

from __future__ import annotations

from typing import Any

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "field"],
            "properties": {"message": {"type": "string"}, "field": {"type": ["string", "null"]}},
        }
    },
}
ERRORS = {
    400: "A parameter or body field is not valid (`field` names it)",
    401: "No token, or a wrong one (`WWW-Authenticate: Bearer`)",
    403: "The token's scope does not allow this call",
    404: "Not found",
    413: "Request body larger than api.max_body",
    415: "Content-Type is not application/json",
    409: "The change cannot be made in the current state (`field` names what)",
    502: "Done, but a tool it runs failed (`field` names what was not done)",
    500: "Internal error (logged with its traceback)",
    503: "The database is unavailable",
}


def error(code: int) -> dict[str, Any]:
    return {"description": ERRORS[code], "content": {"application/json": {"schema": ERROR_SCHEMA}}}


def error_codes(route: Any) -> list[int]:
    """The error statuses ``route`` can answer."""
    codes = [400, 401, 403]
    if any(p.startswith("{") for p in route.parts):
        codes.append(404)
    if route.body is not None:
        codes.append(413)
        if "application/json" in route.body.content:
            codes.append(415)
    return codes + list(route.errors) + [500, 503]


def operation(route: Any) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": route.summary,
        "operationId": route.handler.__name__,
        "tags": list(route.tags or route.parts[:1]),
        "security": [{"bearer": []}],
        "x-scope": route.scope,
        "responses": {str(code): dict(resp) for code, resp in route.responses.items()},
    }
    if route.description:
        op["description"] = route.description
    for code in error_codes(route):
        op["responses"].setdefault(str(code), error(code))
    if route.params:
        op["parameters"] = [p.spec() for p in route.params]
    if route.body is not None:
        content = {m: dict(v) for m, v in route.body.content.items()}
        if route.body.example is not None:
            for media in content.values():
                media["example"] = route.body.example
        op["requestBody"] = {"required": True, "content": content}
    return op


HEALTH_SCHEMA = {"type": "object", "required": ["ready"], "properties": {"ready": {"type": "boolean"}}}
UNAUTHENTICATED = {
    "/healthz": {
        "get": {
            "summary": "Readiness (no token needed)",
            "operationId": "healthz",
            "tags": ["service"],
            "security": [],
            "responses": {
                "200": {"description": "ready", "content": {"application/json": {"schema": HEALTH_SCHEMA}}},
                "503": {"description": "not ready", "content": {"application/json": {"schema": HEALTH_SCHEMA}}},
            },
        }
    },
    "/metrics": {
        "get": {
            "summary": "Prometheus metrics (no token needed; docs/metrics.md)",
            "operationId": "metrics",
            "tags": ["service"],
            "security": [],
            "responses": {
                "200": {
                    "description": "text exposition format",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        }
    },
}


def spec(routes: list[Any]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for r in routes:
        paths.setdefault(r.path, {})[r.method.decode().lower()] = operation(r)
    paths.update(UNAUTHENTICATED)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "postfix-sidecar management API",
            "version": "1",
            "description": "Suppressions, events, rate limits, stats and webhook deliveries. "
            "Bearer tokens from [[api.tokens]]: scope read for GET, write for the rest. Every error is "
            'JSON, `{"error": {"message": ..., "field": ...}}`; a method a path does not have gets 405 '
            "with Allow; an unknown path 404.",
        },
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "paths": paths,
    }
