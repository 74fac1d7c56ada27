"""The management API and webhooks as users run them: ``sidecar serve`` as a subprocess on a
real loopback port and a real database. Used by the API and webhook integration tests and by
bench/bench_api.py.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.harness.sidecar import SidecarProcess


class ApiServer(SidecarProcess):
    """``sidecar serve`` with the API on ``url``, by default on a SQLite file in ``tmp``."""

    def __init__(self, tmp: Path, config_text: str, db: str | None = None) -> None:
        super().__init__(tmp, db or f"sqlite:///{tmp}/sidecar.db", config_text)


def call(
    base: str,
    method: str,
    path: str,
    token: str | None = None,
    body: Any = None,
    data: bytes | None = None,
    ctype: str = "application/json",
) -> tuple[int, Any]:
    """(status, decoded JSON or bytes) for one request."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if body is not None:
        data = json.dumps(body).encode()
    if data is not None:
        headers["Content-Type"] = ctype
    req = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            status, raw, rtype = r.status, r.read(), r.headers.get("content-type", "")
    except urllib.error.HTTPError as e:
        status, raw, rtype = e.code, e.read(), e.headers.get("content-type", "")
    return status, json.loads(raw) if rtype.startswith("application/json") else raw


def add_event(engine: Any, address: str, kind: str = "bounce") -> str:
    """An ``events`` row as the ingester writes it (a hard 5.1.1 bounce by default); its webhook id."""
    import time

    from sqlalchemy import insert

    from sidecar.store.models import Event

    with engine.begin() as conn:
        eid = conn.execute(
            insert(Event)
            .values(
                created_at=time.time(),
                kind=kind,
                address=address,
                tenant="",
                category="invalid-recipient",
                hard=True,
                status="5.1.1",
            )
            .returning(Event.id)
        ).scalar_one()
    return f"evt_e{eid}"
