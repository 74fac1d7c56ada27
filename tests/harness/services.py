"""Private PostgreSQL and Redis servers for tests: own data directory, loopback port, stopped by PID.

`.ci/run` installs the Debian packages; these start and stop the servers themselves. Given
``netns`` (a network namespace made with `ip netns add`) and ``host`` (an address inside it),
a server runs in that namespace and listens on that address instead (tests/harness/fleet.py).
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.harness.system import free_port, pid_alive, wait_port


def _in_netns(netns: str | None) -> list[str]:
    return ["ip", "netns", "exec", netns] if netns else []


def _wait_address(host: str, port: int, timeout: float) -> None:
    """wait_port for an address that is not the host's loopback (a namespace's, over a bridge)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {host}:{port} after {timeout}s")


def _pg_bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not found:
        raise RuntimeError("PostgreSQL is not installed: apt-get install postgresql (.ci/run does this)")
    return Path(found[-1]).parent


class PostgresServer:
    """initdb + pg_ctl as the postgres user (we run as root), trust auth on 127.0.0.1."""

    # Tests need no durability: fsync and synchronous commits off (a benchmark may override this).
    SETTINGS = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"

    def __init__(self, netns: str | None = None, host: str = "127.0.0.1", trust: str | None = None) -> None:
        """``trust``: a client network (e.g. "10.1.2.0/24") let in without a password too."""
        self.bindir = _pg_bindir()
        self.dir = Path(tempfile.mkdtemp(prefix="sidecar-pg-"))
        os.chmod(self.dir, 0o755)
        self.netns, self.host, self.trust = netns, host, trust
        self.port = 5432 if netns else free_port()  # a namespace of its own has every port free
        self.user = "postgres" if os.geteuid() == 0 else None

    def _run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        full = _in_netns(self.netns) + (["runuser", "-u", self.user, "--"] if self.user else []) + list(cmd)
        return subprocess.run(full, check=check, capture_output=True, text=True, timeout=120)

    def start(self) -> PostgresServer:
        if self.user:
            shutil.chown(self.dir, self.user)
        if not (self.dir / "data").exists():
            self._run(str(self.bindir / "initdb"), "-A", "trust", "-U", "postgres", "-D", str(self.dir / "data"))
            if self.trust:
                with open(self.dir / "data" / "pg_hba.conf", "a") as hba:
                    hba.write(f"host all all {self.trust} trust\n")
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.dir / "data"),
            "-w",
            "-l",
            str(self.dir / "log"),
            "-o",
            f"-c listen_addresses={self.host} -p {self.port} -c unix_socket_directories={self.dir} "
            f"{self.SETTINGS} -c max_connections=200",
            "start",
        )
        if self.netns:
            _wait_address(self.host, self.port, 30)
        else:
            wait_port(self.port, 30)
        return self

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.dir / "data"), "-w", "-m", mode, "stop", check=False)

    def remove(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, db: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@{self.host}:{self.port}/{db}"

    def create_database(self, name: str) -> str:
        import psycopg

        dsn = f"host={self.host} port={self.port} user=postgres dbname=postgres"
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


class RedisServer:
    def __init__(self, netns: str | None = None, host: str = "127.0.0.1") -> None:
        if not shutil.which("redis-server"):
            raise RuntimeError("Redis is not installed: apt-get install redis-server (.ci/run does this)")
        self.dir = Path(tempfile.mkdtemp(prefix="sidecar-redis-"))
        self.netns, self.host = netns, host
        self.port = 6379 if netns else free_port()
        self.pid: int | None = None

    def start(self) -> RedisServer:
        pidfile = self.dir / "redis.pid"
        subprocess.run(
            [
                *_in_netns(self.netns),
                "redis-server",
                "--bind",
                self.host,
                "--port",
                str(self.port),
                "--daemonize",
                "yes",
                "--pidfile",
                str(pidfile),
                "--save",
                "",
                "--appendonly",
                "no",
                # bound to a namespace's address, not loopback: clients come over the bridge
                *(["--protected-mode", "no"] if self.netns else []),
                "--dir",
                str(self.dir),
                "--logfile",
                str(self.dir / "redis.log"),
            ],
            check=True,
            timeout=30,
        )
        if self.netns:
            _wait_address(self.host, self.port, 10)
        else:
            wait_port(self.port, 10)
        t0 = time.monotonic()
        while True:  # the pidfile may exist before Redis has written its number into it
            text = pidfile.read_text().strip() if pidfile.exists() else ""
            if text.isdigit():
                break
            if time.monotonic() - t0 > 5:
                raise RuntimeError(f"redis-server wrote no PID to {pidfile} within 5 s")
            time.sleep(0.02)
        self.pid = int(text)
        return self

    def stop(self) -> None:
        if self.pid:
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            t0 = time.monotonic()
            while time.monotonic() - t0 < 10 and pid_alive(self.pid):
                time.sleep(0.02)
            self.pid = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"
