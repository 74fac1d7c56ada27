"""Run `sidecar serve` as a real subprocess on loopback ports with a real SQLite file."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).with_name("sidecar")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cli(*args: str, db: str, config: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [str(BIN), *args, "--db", db] + (["--config", str(config)] if config else [])
    return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=60)


class Sidecar:
    def __init__(self, tmp: Path, db: str, config_text: str = "", host: str = "127.0.0.1") -> None:
        self.host = host
        tmp.mkdir(parents=True, exist_ok=True)
        self.tmp = tmp
        self.db = db
        self.config = tmp / "sidecar.toml"
        self.config.write_text(config_text)
        self.policy_port = free_port()
        self.http_port = free_port()
        self.proc: subprocess.Popen | None = None
        self.log = tmp / "serve.log"

    def start(self, timeout: float = 30) -> float:
        t0 = time.monotonic()
        logf = open(self.log, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [str(BIN), "serve", "--config", str(self.config), "--db", self.db,
             "--policy", f"tcp:{self.policy_port}:interface={self.host}",
             "--http", f"tcp:{self.http_port}:interface={self.host}"],
            cwd=self.tmp, stdout=logf, stderr=subprocess.STDOUT)
        logf.close()
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sidecar serve exited {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                with urllib.request.urlopen(f"http://{self.host}:{self.http_port}/healthz", timeout=1) as r:
                    if r.status == 200:
                        return time.monotonic() - t0
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"sidecar serve not ready after {timeout}s:\n{self.log.read_text()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc = None

    def connect(self) -> PolicyClient:
        return PolicyClient(self.policy_port, self.host)

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://{self.host}:{self.http_port}/metrics", timeout=5) as r:
            return r.read().decode()


class PolicyClient:
    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection((host, port), timeout=10)
        self.buf = b""

    def ask(self, attrs: dict[str, str]) -> str:
        self.sock.sendall("".join(f"{k}={v}\n" for k, v in attrs.items()).encode() + b"\n")
        while b"\n\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("policy server closed the connection")
            self.buf += data
        reply, _, self.buf = self.buf.partition(b"\n\n")
        assert reply.startswith(b"action=") and b"\n" not in reply, reply
        return reply[len(b"action="):].decode()

    def close(self) -> None:
        self.sock.close()
