"""The management API and webhooks as users run them: ``sidecar serve`` as a subprocess on a
real loopback port and a real database. Used by the API and webhook integration tests and by
bench/bench_api.py.
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
        self.proc = subprocess.Popen([sys.executable, "-m", "sidecar", "serve", "--config", str(self.config),
                                      "--db", self.db, "--http", f"tcp:{self.port}:interface=127.0.0.1",
                                      "--policy", f"tcp:{free_port()}:interface=127.0.0.1"],
                                     cwd=self.tmp, env=self.env, stdout=logf, stderr=subprocess.STDOUT)
        logf.close()
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sidecar serve exited {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"sidecar serve not ready:\n{self.log.read_text()}")

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

