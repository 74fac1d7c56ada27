"""`sidecar serve` that cannot start leaves at once: one line on stderr, exit 1, every listener closed.

A half-started server (the database pool and the policy port up, a later listener failed) used
to log "cannot start" and keep running: its policy port accepted connections and never
answered, so Postfix waited its whole policy timeout on every message.
"""

from __future__ import annotations

import socket
import sqlite3
import subprocess
import time
from pathlib import Path

from tests.harness.sidecar import BIN, SidecarProcess
from tests.harness.system import free_port

EXIT_WITHIN = 3.0  # seconds from the error line to exit (~0.1 s when quiet; the bug was: never)


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def serve_failing(tmp: Path, db: str, policy: list[str], http: str, config: str = "") -> tuple[int, list[str], float]:
    """Run `sidecar serve` expected to fail: (exit code, stderr lines, seconds from the error to the exit)."""
    cfg = tmp / "sidecar.toml"
    cfg.write_text(config)
    argv = [str(BIN), "--log-level", "WARNING", "serve", "--config", str(cfg), "--db", db, "--http", http]
    for ep in policy:
        argv += ["--policy", ep]
    proc = subprocess.Popen(argv, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()  # blocks until the error is written (or the process ends)
        t_error = time.monotonic()
        code = proc.wait(timeout=30)  # the old code never got here
        elapsed = time.monotonic() - t_error
        lines = [first.rstrip("\n")] + proc.stderr.read().splitlines()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    return code, [line for line in lines if line], elapsed


def tcp(port: int) -> str:
    return f"tcp:{port}:interface=127.0.0.1"


def held_port() -> tuple[socket.socket, int]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    return s, s.getsockname()[1]


def assert_one_line(lines: list[str], *needles: str) -> None:
    assert len(lines) == 1, lines
    assert "cannot start" in lines[0] and all(n in lines[0] for n in needles), lines


def test_policy_port_in_use(tmp_path: Path) -> None:
    holder, taken = held_port()
    first, http = free_port(), free_port()
    try:
        code, lines, elapsed = serve_failing(
            tmp_path, f"sqlite:///{tmp_path}/s.db", [tcp(first), tcp(taken)], tcp(http)
        )
    finally:
        holder.close()
    assert code == 1
    assert_one_line(lines, f"policy listener tcp:{taken}", "in use")
    assert elapsed < EXIT_WITHIN, elapsed
    assert not listening(first) and not listening(http)


def test_http_port_in_use(tmp_path: Path) -> None:
    holder, taken = held_port()
    policy = free_port()
    try:
        code, lines, elapsed = serve_failing(tmp_path, f"sqlite:///{tmp_path}/s.db", [tcp(policy)], tcp(taken))
    finally:
        holder.close()
    assert code == 1
    assert_one_line(lines, f"HTTP listener tcp:{taken}", "in use")
    assert elapsed < EXIT_WITHIN, elapsed
    assert not listening(policy)


def test_ingest_socket_in_use_by_another_service(tmp_path: Path) -> None:
    sock = tmp_path / "ingest.sock"
    config = f'[ingest]\nsocket = "{sock}"\n'
    first = SidecarProcess(tmp_path / "a", f"sqlite:///{tmp_path}/a.db", config)
    first.start()
    try:
        policy, http = free_port(), free_port()
        (tmp_path / "b").mkdir()
        code, lines, elapsed = serve_failing(
            tmp_path / "b", f"sqlite:///{tmp_path}/b.db", [tcp(policy)], tcp(http), config
        )
        assert code == 1
        assert_one_line(lines, str(sock), "in use by another running service")
        assert elapsed < EXIT_WITHIN, elapsed
        assert not listening(policy) and not listening(http)
        # the first service is untouched: it still answers and still owns its socket
        client = first.connect()
        assert (
            client.ask({"request": "smtpd_access_policy", "protocol_state": "RCPT", "recipient": "a@example.com"})
            == "DUNNO"
        )
        client.close()
        probe = socket.socket(socket.AF_UNIX)
        probe.connect(str(sock))
        probe.close()
    finally:
        first.stop()


def test_database_unreachable(tmp_path: Path) -> None:
    policy, http = free_port(), free_port()
    down = f"postgresql://postgres@127.0.0.1:{free_port()}/sidecar"  # nothing listens there
    code, lines, elapsed = serve_failing(tmp_path, down, [tcp(policy)], tcp(http))
    assert code == 1
    assert_one_line(lines, "database postgresql://postgres@127.0.0.1", "refused")
    assert elapsed < EXIT_WITHIN, elapsed
    assert not listening(policy) and not listening(http)


def test_schema_from_an_unknown_revision(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    with sqlite3.connect(db) as conn:  # as a newer version of the sidecar would leave it
        conn.execute("create table alembic_version (version_num varchar(32) primary key)")
        conn.execute("insert into alembic_version values ('ffffffffffff')")
    policy, http = free_port(), free_port()
    code, lines, elapsed = serve_failing(tmp_path, f"sqlite:///{db}", [tcp(policy)], tcp(http))
    assert code == 1
    assert_one_line(lines, "ffffffffffff")
    assert elapsed < EXIT_WITHIN, elapsed
    assert not listening(policy) and not listening(http)


def test_not_a_database(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    db.write_bytes(b"this is not an SQLite file\n" * 200)
    policy, http = free_port(), free_port()
    code, lines, _ = serve_failing(tmp_path, f"sqlite:///{db}", [tcp(policy)], tcp(http))
    assert code == 1
    assert_one_line(lines, "not a database")
    assert not listening(policy) and not listening(http)
