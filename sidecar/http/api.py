"""The management API's plumbing: routing, bearer-token checks, JSON in and out, body limits.

Handlers live in :mod:`sidecar.http.handlers`; database work runs in the service's thread
pool. Errors are JSON: ``{"error": {"message": ..., "field": ...}}`` with a 4xx code.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import KW_ONLY, dataclass, field, replace
from typing import Any
from urllib.parse import unquote

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from sidecar.http.auth import TokenAuth
from sidecar.http.contract import Body, Param, check_body, check_params
from sidecar.http.queries import InvalidParameter
from sidecar.metrics import API_REQUESTS
from sidecar.suppression.store import SuppressionStore
from sidecar.units import InvalidValue

log = logging.getLogger("sidecar.http")


class ApiError(Exception):
    def __init__(self, code: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.field = code, message, field


@dataclass
class Reply:
    """A handler's answer other than a plain 200 JSON body."""

    code: int = 200
    body: Any = None
    content_type: bytes = b"application/json"


class MethodNotAllowed(Exception):
    def __init__(self, allowed: list[bytes]) -> None:
        super().__init__("method not allowed")
        self.allowed = allowed


STREAMING = object()  # a handler that writes and finishes the request itself returns this


class LimitedRequest(Request):
    """A request whose body is dropped (and answered 413) beyond ``max_body`` bytes."""

    max_body = 10 * 1024 * 1024
    too_big = False
    _received = 0

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self.max_body:
            self.too_big = True
            length = 0
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self.too_big:
            return
        self._received += len(data)
        if self._received > self.max_body:
            self.too_big = True
            self.content = io.BytesIO()  # type: ignore[assignment]
            return
        super().handleContentChunk(data)


def request_factory(max_body: int) -> type[LimitedRequest]:
    return type("SidecarRequest", (LimitedRequest,), {"max_body": max_body})


@dataclass
class Call:
    """What a handler gets: path variables, query parameters and the raw request."""

    api: Api
    request: Request
    vars: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)  # as sent (text)
    args: dict[str, Any] = field(
        default_factory=dict
    )  # path and query parameters the route declares, checked and typed
    body: dict[str, Any] = field(default_factory=dict)  # a JSON body, checked against the route's schema

    def json(self) -> dict[str, Any]:
        ctype = (self.request.getHeader(b"content-type") or b"").decode("latin-1").split(";")[0].strip()
        if ctype not in ("", "application/json"):
            raise ApiError(415, f"expected Content-Type application/json, got {ctype}", "content-type")
        try:
            content: Any = self.request.content
            data = json.loads(content.read() or b"{}")
        except ValueError as e:
            raise ApiError(400, f"body is not valid JSON: {e}", "body") from None
        except RecursionError:
            raise ApiError(400, "body is not valid JSON: nested too deeply", "body") from None
        if not isinstance(data, dict):
            raise ApiError(400, "expected a JSON object", "body")
        for name, value in data.items():  # lone surrogates: JSON can carry them, UTF-8 cannot
            try:
                json.dumps([name, value], ensure_ascii=False).encode()
            except UnicodeEncodeError as e:
                raise ApiError(400, f"not valid Unicode (a lone surrogate at character {e.start})", name) from None
        return data


Handler = Callable[[Call], Any]


@dataclass(frozen=True)
class Route:
    """One operation. The keyword fields are its contract: requests are checked against them and
    /openapi.json is made from them (a route without ``responses`` is undescribed: a test fails)."""

    method: bytes
    parts: tuple[str, ...]  # "{name}" is a variable segment
    scope: str
    handler: Handler
    summary: str = ""
    _: KW_ONLY
    params: tuple[Param, ...] = ()  # path ("{name}" segments, where="path") and query parameters
    body: Body | None = None
    responses: Mapping[int, Mapping[str, Any]] = field(default_factory=dict)  # successes: status -> OpenAPI response
    tags: tuple[str, ...] = ()  # default: the first path segment
    errors: tuple[int, ...] = ()  # error statuses beyond the common ones (openapi.ERRORS)
    description: str = ""

    @property
    def path(self) -> str:
        return "/" + "/".join(self.parts)

    def configured(self, cfg: Any) -> Route:
        """This route with the parameter schemas that depend on the configuration filled in."""
        if not any(p.from_config for p in self.params):
            return self
        return replace(self, params=tuple(p.configured(cfg) for p in self.params))


class Api:
    """Everything the handlers need. Pass to ``make_site(status, api=Api(cfg, engine, reactor, pool, ...))``."""

    def __init__(self, cfg: Any, engine: Any, reactor: Any, pool: Any, *, limiter: Any = None) -> None:
        self.cfg, self.engine, self.reactor, self.pool, self.limiter = cfg, engine, reactor, pool, limiter
        self.auth = TokenAuth(cfg.api.tokens)
        self.store = SuppressionStore(engine, case_sensitive_local=cfg.suppression.local_part_case_sensitive)
        from sidecar.http.handlers import ROUTES

        # what validation and /openapi.json both read: one contract, this server's configuration
        self.routes: list[Route] = [r.configured(cfg) for r in ROUTES]

    def run(self, f: Callable[..., Any], *a: Any, **kw: Any) -> Deferred:
        """Run blocking (database) work in the service's thread pool."""
        return deferToThreadPool(self.reactor, self.pool, f, *a, **kw)

    def match(self, method: bytes, parts: list[str]) -> tuple[Route | None, dict[str, str], list[bytes]]:
        """(route, variables, the methods the path has: empty for an unknown path).

        A path that matches several patterns belongs to the most literal one(s):
        ``/suppressions/export`` is never ``/suppressions/{address}``.
        """
        best: list[tuple[Route, dict[str, str]]] = []
        best_literals = -1
        for r in self.routes:
            if len(r.parts) != len(parts):
                continue
            vs: dict[str, str] = {}
            for want, got in zip(r.parts, parts, strict=True):
                if want.startswith("{"):
                    if not got:
                        break
                    vs[want[1:-1]] = got
                elif want != got:
                    break
            else:
                literals = len(r.parts) - len(vs)
                if literals > best_literals:
                    best, best_literals = [], literals
                if literals == best_literals:
                    best.append((r, vs))
        allowed: list[bytes] = []
        for r, vs in best:
            if r.method == method or (method == b"HEAD" and r.method == b"GET"):
                return r, vs, allowed
            allowed += [b"GET", b"HEAD"] if r.method == b"GET" else [r.method]
        return None, {}, allowed


def write_json(request: Request, code: int, body: Any) -> None:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    request.write(json.dumps(body, separators=(",", ":")).encode() + b"\n")
    request.finish()


def error_body(message: str, field: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "field": field}}


def method_not_allowed(request: Request, allowed: list[bytes]) -> None:
    """A JSON 405 with its ``Allow`` header."""
    request.setHeader(b"allow", b", ".join(dict.fromkeys(allowed)))
    write_json(request, 405, error_body(f"method {request.method.decode('latin-1')} not allowed", "method"))


class ApiResource(Resource):
    """One leaf for every API path; routes by method and path segments."""

    isLeaf = True

    def __init__(self, api: Api) -> None:
        super().__init__()
        self.api = api

    def render(self, request: Request) -> Any:
        request.notifyFinish().addBoth(
            lambda _: API_REQUESTS.labels(getattr(request, "sidecar_route", "unmatched"), str(request.code)).inc()
        )
        try:
            call = self._prepare(request)
        except MethodNotAllowed as e:
            method_not_allowed(request, e.allowed)
            return NOT_DONE_YET
        except (InvalidParameter, InvalidValue) as e:
            write_json(request, 400, error_body(e.message, e.field))
            return NOT_DONE_YET
        except ApiError as e:
            if e.code == 401:
                request.setHeader(b"www-authenticate", b'Bearer realm="sidecar"')
            write_json(request, e.code, error_body(e.message, e.field))
            return NOT_DONE_YET
        finished: list[bool] = []
        request.notifyFinish().addBoth(lambda _: finished.append(True))
        d = maybeDeferred(call[0].handler, call[1])
        d.addCallbacks(
            lambda result: self._done(request, result, finished), lambda f: self._failed(request, f, finished)
        )
        return NOT_DONE_YET

    def _prepare(self, request: Request) -> tuple[Route, Call]:
        raw = (request.path or b"/").decode("latin-1").split("?")[0]
        parts = [unquote(p) for p in raw.strip("/").split("/")]
        route, vs, allowed = self.api.match(request.method, parts)
        if route is None:
            if allowed:
                raise MethodNotAllowed(allowed)
            raise ApiError(404, "no such resource", "path")
        request.sidecar_route = f"{route.method.decode()} /" + "/".join(route.parts)  # type: ignore[attr-defined]
        ident = self.api.auth.identify(request.getHeader(b"authorization"))
        if ident is None:
            raise ApiError(
                401,
                "missing or invalid bearer token"
                if self.api.auth
                else "the API is disabled: no [[api.tokens]] configured",
                "authorization",
            )
        if not TokenAuth.allows(ident[0], route.scope):
            raise ApiError(
                403, f"token {ident[1]!r} has scope {ident[0]}; this call needs {route.scope}", "authorization"
            )
        if getattr(request, "too_big", False):
            raise ApiError(413, f"request body larger than api.max_body ({self.api.cfg.api.max_body} bytes)", "body")
        params: dict[str, str] = {}
        args: dict[bytes, list[bytes]] = request.args or {}
        for k, v in args.items():
            name = k.decode("utf-8", "replace")
            if len(v) > 1:
                raise ApiError(400, "given more than once", name)
            params[name] = v[0].decode("utf-8", "replace")
        call = Call(self.api, request, vs, params)
        call.args = check_params(tuple(p for p in route.params if p.where == "path"), vs)
        call.args.update(check_params(tuple(p for p in route.params if p.where == "query"), params))
        if route.body is not None and "application/json" in route.body.content:
            call.body = call.json()
            check_body(route.body.content["application/json"]["schema"], call.body)
        return route, call

    def _done(self, request: Request, result: Any, finished: list[bool]) -> None:
        if result is STREAMING or finished:
            return
        if isinstance(result, Reply):
            if isinstance(result.body, bytes):
                request.setResponseCode(result.code)
                request.setHeader(b"content-type", result.content_type)
                request.write(result.body)
                request.finish()
            else:
                write_json(request, result.code, result.body)
        else:
            write_json(request, 200, result)

    def _failed(self, request: Request, f: Failure, finished: list[bool]) -> None:
        if finished:
            return
        err = f.value
        if isinstance(err, ApiError):
            write_json(request, err.code, error_body(err.message, err.field))
        elif isinstance(err, (InvalidParameter, InvalidValue)):
            write_json(request, 400, error_body(err.message, err.field))
        else:
            log.error("API %s %s failed: %s", request.method.decode(), request.path.decode("latin-1"), f.getTraceback())
            code = 503 if "OperationalError" in type(err).__name__ else 500
            write_json(request, code, error_body(f"internal error: {type(err).__name__}"))
