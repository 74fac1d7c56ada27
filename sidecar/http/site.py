"""The HTTP listener: /metrics (Prometheus) and /healthz without auth; the management API with it."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from prometheus_client.twisted import MetricsResource
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

API_ROOTS = (b"openapi.json", b"suppressions", b"events", b"messages", b"limits", b"stats", b"webhooks", b"reputation")


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


def make_site(status: Callable[[], dict[str, object]], api: Any = None) -> Site:
    """``api``: a :class:`sidecar.http.api.Api`; without it only /metrics and /healthz are served."""
    root = Resource()
    root.putChild(b"metrics", MetricsResource())  # type: ignore[arg-type]
    root.putChild(b"healthz", Health(status))  # type: ignore[arg-type]
    if api is None:
        return Site(root)
    from sidecar.http.api import ApiResource, request_factory

    leaf = ApiResource(api)
    for name in API_ROOTS:
        root.putChild(name, leaf)  # type: ignore[arg-type]
    site = Site(root, requestFactory=request_factory(api.cfg.api.max_body))
    site.displayTracebacks = False
    return site
