"""The HTTP listener: /metrics (Prometheus) and /healthz."""

from __future__ import annotations

import json
from collections.abc import Callable

from prometheus_client.twisted import MetricsResource
from twisted.web.resource import Resource
from twisted.web.server import Request, Site


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


def make_site(status: Callable[[], dict[str, object]]) -> Site:
    root = Resource()
    root.putChild(b"metrics", MetricsResource())
    root.putChild(b"healthz", Health(status))
    return Site(root)
