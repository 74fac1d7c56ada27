"""Loopback ports and PIDs: free_port, wait_port, port_in_use, pid_alive."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

_GIVEN: set[int] = set()
_NEXT: dict[str, int] = {}
_LOWEST = 10000  # under xdist, each worker takes its ports from its own slice of [_LOWEST, ephemeral)


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _worker_slice() -> range | None:
    """This pytest-xdist worker's own ports (gw0, gw1 ... of PYTEST_XDIST_WORKER_COUNT), or None
    outside xdist. The slices lie below the kernel's ephemeral range, so neither another worker
    nor an outgoing connection's local port can take a port between free_port() and its bind."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if not (worker.startswith("gw") and worker[2:].isdigit() and count.isdigit() and int(count) > 0):
        return None
    size = (_ephemeral_low() - _LOWEST) // int(count)
    if size < 100:
        return None
    start = _LOWEST + int(worker[2:]) * size
    return range(start, start + size)


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago, and never one this process
    was given before (the kernel may hand the same ephemeral port out twice in a row, e.g. to a
    server's policy and HTTP listeners asked for one after the other). Under pytest-xdist each
    worker hands out ports from its own slice (see _worker_slice); once a slice is used up, or
    outside xdist, the kernel picks."""
    ports = _worker_slice()
    if ports is not None:
        port = _NEXT.get("port", ports.start)
        while port < ports.stop:
            _NEXT["port"] = port + 1
            if port not in _GIVEN and _bindable(port):
                _GIVEN.add(port)
                return port
            port += 1
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_port(port: int, timeout: float) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (PID 1 here may not reap)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
