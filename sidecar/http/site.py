"""The HTTP listener: /metrics (Prometheus) and /healthz without auth; the management API with it.

Every answer is JSON, errors included: unknown paths get a JSON 404, a method a path does not
have a JSON 405 with ``Allow`` (never Twisted's HTML pages).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from prometheus_client.twisted import MetricsResource
from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from sidecar.http.api import error_body, method_not_allowed, write_json

access_log = logging.getLogger("sidecar.http.access")
QUIET_PATHS = (b"/metrics", b"/healthz")  # scraped and probed every few seconds: logged at DEBUG


class AccessLogSite(Site):
    """Access log lines (combined log format) on the ``sidecar.http.access`` logger: INFO for the
    API, DEBUG for /metrics and /healthz."""

    def log(self, request: http.Request) -> None:
        path = (request.path or b"").split(b"?")[0].rstrip(b"/")
        level = logging.DEBUG if path in QUIET_PATHS else logging.INFO
        if access_log.isEnabledFor(level):
            access_log.log(level, "%s", self._logFormatter(self._logDateTime, request))


# The management API answers every path not served above (kept for reference; routes live in ROUTES).
API_ROOTS = (
    b"openapi.json",
    b"suppressions",
    b"events",
    b"messages",
    b"limits",
    b"stats",
    b"webhooks",
    b"domains",
    b"reputation",
)


class GetOnly(Resource):
    """A leaf answering GET and HEAD through ``wrapped``; any other method: JSON 405 with Allow."""

    isLeaf = True

    def __init__(self, wrapped: Resource) -> None:
        super().__init__()
        self.wrapped = wrapped

    def render(self, request: Request) -> Any:
        if request.method in (b"GET", b"HEAD"):
            return self.wrapped.render(request)  # type: ignore[arg-type]
        method_not_allowed(request, [b"GET", b"HEAD"])
        return NOT_DONE_YET


class NotFound(Resource):
    isLeaf = True

    def render(self, request: Request) -> Any:
        write_json(request, 404, error_body("no such resource", "path"))
        return NOT_DONE_YET


class Root(Resource):
    """Named children; any other path (and / itself) answers ``fallback``."""

    def __init__(self, fallback: Resource) -> None:
        super().__init__()
        self.fallback = fallback

    def getChild(self, path: bytes, request: Request) -> Resource:
        return self.fallback

    def render(self, request: Request) -> Any:
        return self.fallback.render(request)  # type: ignore[arg-type]


class Health(Resource):
    isLeaf = True

    def __init__(self, status: Callable[[], dict[str, object]]) -> None:
        super().__init__()
        self.status = status

    def render_GET(self, request: Request) -> bytes:
        st = self.status()
        request.setResponseCode(200 if st.get("ready") else 503)
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(st).encode() + b"\n"

    render_HEAD = render_GET


def make_site(status: Callable[[], dict[str, object]], api: Any = None) -> Site:
    """``api``: a :class:`sidecar.http.api.Api`; without it only /metrics and /healthz are served."""
    leaf: Resource = NotFound()
    if api is not None:
        from sidecar.http.api import ApiResource

        leaf = ApiResource(api)  # type: ignore[assignment]
    root = Root(leaf)
    root.putChild(b"metrics", GetOnly(MetricsResource()))  # type: ignore[arg-type]
    root.putChild(b"healthz", GetOnly(Health(status)))  # type: ignore[arg-type]
    if api is None:
        site = AccessLogSite(root)
    else:
        from sidecar.http.api import request_factory

        site = AccessLogSite(root, requestFactory=request_factory(api.cfg.api.max_body))
    site.displayTracebacks = False
    return site
