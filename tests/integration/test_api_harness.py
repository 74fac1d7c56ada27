"""A small stand-in for `sidecar serve` with the API and webhooks wired, run as a subprocess.

``python -m tests.integration.test_api_harness CONFIG DB_URL PORT`` builds what service.py
will build (thread pool, Api, make_site, WebhookService) on a real loopback port and a real
SQLite file. Used by the API and webhook integration tests and by bench/bench_api.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.integration.sidecar_proc import free_port

ROOT = Path(__file__).resolve().parents[2]


def serve_main(config: str, db: str, port: int) -> None:  # pragma: no cover - runs in the subprocess
    import logging

    from twisted.internet import endpoints, reactor
    from twisted.python.threadpool import ThreadPool

    from sidecar.config import load_config
    from sidecar.http.api import Api
    from sidecar.http.site import make_site
    from sidecar.store.db import make_engine, upgrade
    from sidecar.webhooks.service import WebhookService

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = load_config(config, {"database.url": db})
    engine = make_engine(cfg.database.url)
    upgrade(engine)
    pool = ThreadPool(minthreads=1, maxthreads=cfg.server.db_threads, name="sidecar-db")
    pool.start()
    base = float(os.environ.get("SIDECAR_WEBHOOK_BACKOFF", "10"))
    hooks = WebhookService(cfg, engine, reactor, pool, backoff_base=base, backoff_cap=base * 8)
    site = make_site(lambda: {"ready": True}, api=Api(cfg, engine, reactor, pool))
    endpoints.serverFromString(reactor, f"tcp:{port}:interface=127.0.0.1").listen(site)
    hooks.startService()
    reactor.addSystemEventTrigger("before", "shutdown", hooks.stopService)
    reactor.addSystemEventTrigger("after", "shutdown", pool.stop)
    reactor.run()  # type: ignore[attr-defined]


class ApiServer:
    def __init__(self, tmp: Path, config_text: str, db: str | None = None, env: dict[str, str] | None = None) -> None:
        self.tmp = tmp
        self.db = db or f"sqlite:///{tmp}/sidecar.db"
        self.config = tmp / "sidecar.toml"
        self.config.write_text(config_text)
        self.port = free_port()
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.log = tmp / "api-server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> ApiServer:
        logf = open(self.log, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.integration.test_api_harness", str(self.config),
                                      self.db, str(self.port)], cwd=ROOT, env=self.env, stdout=logf,
                                     stderr=subprocess.STDOUT)
        logf.close()
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"harness exited {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"harness not ready:\n{self.log.read_text()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc = None


def call(base: str, method: str, path: str, token: str | None = None, body: Any = None,
         data: bytes | None = None, ctype: str = "application/json") -> tuple[int, Any]:
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


if __name__ == "__main__":  # pragma: no cover
    serve_main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
