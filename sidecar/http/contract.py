"""The API contract's building blocks: parameters, bodies and responses as JSON Schema.

A :class:`~sidecar.http.api.Route` carries them; request validation (:func:`check_params`,
:func:`check_body`, with the ``jsonschema`` validator) and ``/openapi.json``
(:mod:`sidecar.http.openapi`) are both made from the route, so they cannot drift. Checks a
schema cannot say (address syntax, times, which rate-limit rules exist) stay in the handlers,
with errors naming the field all the same.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError, best_match

from sidecar.suppression.fields import control_problem

MAX_ID = 2**62
# text without control characters, DEL, C1 or U+2028/9 (sidecar.suppression.fields; lone
# surrogates, which a JSON body alone can carry, are refused as the body is read)
NO_CONTROL = "^[^\\u0000-\\u001f\\u007f-\\u009f\\u2028\\u2029]*$"


def text(max_len: int, desc: str = "", **kw: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "string", "maxLength": max_len, "pattern": NO_CONTROL, **kw}
    if desc:
        out["description"] = desc
    return out


ADDRESS = {"type": "string", "format": "email", "minLength": 3, "maxLength": 320, "example": "bob@example.com"}
INT_ID = {"type": "integer", "minimum": 0, "maximum": MAX_ID}
_WHEN = {"type": "string", "maxLength": 64, "pattern": "^[0-9A-Za-z .:+-]*$"}
_WHEN_DESC = 'ISO 8601 time ("2026-11-01", "2026-11-01T12:00:00Z"), POSIX seconds, or a duration ({})'
PAST = {**_WHEN, "description": _WHEN_DESC.format('"24h": 24 hours ago'), "example": "24h"}
FUTURE = {
    **_WHEN,
    "description": _WHEN_DESC.format('"30d": 30 days from now') + '; "never" or empty: no expiry',
    "example": "30d",
}
FUTURE_BODY = {**FUTURE, "type": ["string", "number", "null"]}


@dataclass(frozen=True)
class Param:
    """A path or query parameter. Query parameters arrive as text; an integer schema reads ASCII digits."""

    name: str
    schema: Mapping[str, Any]
    description: str = ""
    where: str = "query"
    required: bool = False
    # the schema as this server's configuration narrows it (e.g. the configured rule names)
    from_config: Callable[[Any], Mapping[str, Any]] | None = None

    def configured(self, cfg: Any) -> Param:
        return self if self.from_config is None else replace(self, schema=self.from_config(cfg), from_config=None)

    def spec(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "in": self.where,
            "required": self.required or self.where == "path",
            "schema": dict(self.schema),
            "description": self.description,
        }


@dataclass(frozen=True)
class Body:
    """A request body: ``{media type: schema}``; ``application/json`` bodies are parsed and validated."""

    content: Mapping[str, Mapping[str, Any]]
    example: Any = None


@dataclass(frozen=True)
class Contract:
    """What a route adds to its method, path, scope and handler (all optional for construction)."""

    params: tuple[Param, ...] = ()
    body: Body | None = None
    responses: Mapping[int, Mapping[str, Any]] = field(default_factory=dict)


_ASCII_INT = re.compile(r"[0-9]{1,19}")
_FORMATS = FormatChecker(["email"])


def _coerce(schema: Mapping[str, Any], value: str) -> Any:
    if schema.get("type") == "integer" and _ASCII_INT.fullmatch(value):
        return int(value)
    return value


def _message(err: ValidationError) -> str:
    if err.validator == "pattern" and isinstance(err.instance, str):
        problem = control_problem(err.instance)
        if problem:
            return problem
    if err.validator in ("minimum", "maximum", "type") and err.schema.get("type") == "integer":
        return f"expected an integer from {err.schema.get('minimum', 0)} to {err.schema.get('maximum', MAX_ID)}"
    if err.validator == "enum":
        return "expected one of " + ", ".join(map(str, err.validator_value))
    if err.validator == "maxLength":
        return f"longer than {err.validator_value} characters"
    if err.validator in ("anyOf", "pattern") and "description" in err.schema:
        return "expected " + err.schema["description"]
    return err.message


def first_error(schema: Mapping[str, Any], value: Any) -> ValidationError | None:
    return best_match(Draft202012Validator(schema, format_checker=_FORMATS).iter_errors(value))


def check_params(params: tuple[Param, ...], given: Mapping[str, str]) -> dict[str, Any]:
    """The declared parameters in ``given``, typed; raises ``InvalidValue(name, message)``."""
    from sidecar.units import InvalidValue

    out: dict[str, Any] = {}
    for p in params:
        if p.name not in given:
            if p.required:
                raise InvalidValue(p.name, "required")
            continue
        value = _coerce(p.schema, given[p.name])
        err = first_error(p.schema, value)
        if err is not None:
            raise InvalidValue(p.name, _message(err))
        out[p.name] = value
    return out


def check_body(schema: Mapping[str, Any], data: Any) -> None:
    """Raises ``InvalidValue(field, message)`` naming the first offending field of a JSON body."""
    from sidecar.units import InvalidValue

    err = first_error(schema, data)
    if err is None:
        return
    if err.validator == "required":
        missing = next(n for n in err.validator_value if n not in err.instance)
        raise InvalidValue(missing, "required")
    if err.validator == "additionalProperties":
        allowed = set(err.schema.get("properties", {}))
        raise InvalidValue(sorted(set(err.instance) - allowed)[0], "unknown field")
    name = ".".join(str(p) for p in err.absolute_path) or "body"
    raise InvalidValue(name, _message(err))
