"""Run `sidecar serve` as a real subprocess on loopback ports, and the CLI beside it.

One class starts and stops it for every test: ``SidecarProcess``. The API tests use it through
``tests.harness.api.ApiServer``, the Postfix lab through a thin subclass in
tests/integration/postfix/lab_sidecar.py (an extra unix-socket policy listener, its own error).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.harness.policy import PolicyClient
from tests.harness.system import free_port, pid_alive

BIN = Path(sys.executable).with_name("sidecar")


def run_cli(*args: str, db: str, config: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [str(BIN), *args, "--db", db] + (["--config", str(config)] if config else [])
    return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=60)


class SidecarProcess:
    """``sidecar serve --db DB`` in ``tmp`` with a policy and an HTTP listener on free ports.

    ``config_text`` is written to ``tmp/sidecar.toml``; or pass ``config``, an existing file
    (``config_text=None`` and no ``config``: no ``--config`` at all). Its output goes to ``log``.
    """

    error: type[Exception] = RuntimeError  # what start() raises when serve exits or never gets ready

    def __init__(
        self,
        tmp: Path,
        db: str,
        config_text: str | None = "",
        host: str = "127.0.0.1",
        *,
        config: Path | None = None,
        log_name: str = "serve.log",
    ) -> None:
        self.host = host
        tmp.mkdir(parents=True, exist_ok=True)
        self.tmp = tmp
        self.db = db
        if config is None and config_text is not None:
            config = tmp / "sidecar.toml"
            config.write_text(config_text)
        self.config = config
        self.policy_port = free_port()
        self.http_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = tmp / log_name
        self.started_in: float | None = None  # seconds from Popen to a healthy /healthz

    @property
    def url(self) -> str:
        """The HTTP listener (API, /healthz, /metrics)."""
        return f"http://{self.host}:{self.http_port}"

    def policy_endpoints(self) -> list[str]:
        """Twisted endpoints for --policy, in order."""
        return [f"tcp:{self.policy_port}:interface={self.host}"]

    def argv(self) -> list[str]:
        argv = [str(BIN), "serve"] + (["--config", str(self.config)] if self.config is not None else [])
        argv += ["--db", self.db]
        for endpoint in self.policy_endpoints():
            argv += ["--policy", endpoint]
        return argv + ["--http", f"tcp:{self.http_port}:interface={self.host}"]

    def start(self, timeout: float = 60) -> SidecarProcess:
        t0 = time.monotonic()
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen(
                self.argv(), cwd=self.tmp, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise self.error(
                    f"`{' '.join(self.argv())}` exited {self.proc.returncode} before it was ready:\n{self.log_tail()}"
                )
            if self.healthz() == 200:
                self.started_in = time.monotonic() - t0
                return self
            time.sleep(0.05)
        self.stop()  # not left running: the caller's teardown never sees a server that did not start
        raise self.error(f"sidecar serve not ready after {timeout}s ({self.url}/healthz):\n{self.log_tail()}")

    def healthz(self) -> int | None:
        """The status of GET /healthz, or None when nothing answers."""
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=1) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except OSError:
            return None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """``sig`` (TERM), then KILL after 10 s; fails if the process is somehow still there."""
        if self.proc is None or self.proc.poll() is not None:
            return
        pid = self.proc.pid
        for signum in (sig, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
                break
        if pid_alive(pid):
            raise AssertionError(f"sidecar serve PID {pid} is still running after {sig!s} and KILL")

    def kill(self) -> float:
        """SIGKILL by PID, as a crash would; returns (monotonic) once the process is gone."""
        assert self.proc is not None and self.proc.poll() is None, "sidecar serve is not running"
        os.kill(self.proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        self.proc.wait(10)
        return killed

    def connect(self) -> PolicyClient:
        return PolicyClient(self.policy_port, self.host)

    def metrics(self) -> str:
        with urllib.request.urlopen(self.url + "/metrics", timeout=5) as r:
            return r.read().decode()

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no sidecar log)"
