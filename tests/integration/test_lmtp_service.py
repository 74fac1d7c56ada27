"""The LMTP listener of a real `sidecar serve` (unix socket and loopback TCP), real SQLite:
each recipient recorded with its own envelope, VERP token and the queue id from XFORWARD,
answered after commit; a retried delivery is a duplicate; a taken port stops start-up."""

from __future__ import annotations

import sqlite3
import stat
import subprocess
from pathlib import Path

from sidecar.bounce.verp import make_verp_token
from tests.harness.ingest import HARD, KEY, variant
from tests.harness.lmtp import LmtpClient
from tests.harness.sidecar import BIN, SidecarProcess
from tests.harness.system import free_port


def serve(tmp: Path, lmtp: str, extra: str = "") -> SidecarProcess:
    config = f'[ingest]\nlmtp = "{lmtp}"\nsocket = "{tmp}/ingest.sock"\nverp_key = "{KEY}"\n{extra}'
    return SidecarProcess(tmp, f"sqlite:///{tmp}/s.db", config).start()


def rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as c:
        return c.execute(sql).fetchall()


def test_each_recipient_recorded_with_its_own_envelope(tmp_path: Path) -> None:
    sock = tmp_path / "run" / "lmtp.sock"
    server = serve(tmp_path, str(sock))
    try:
        assert stat.S_IMODE(sock.stat().st_mode) == 0o660
        tok1 = make_verp_token(KEY.encode(), "hard1@example.test", "acme")
        rcpts = [f"bounces+{tok1}@bounce.example", "bounces@bounce.example"]
        client = LmtpClient(str(sock))
        assert "XFORWARD IDENT" in client.extensions[-1] or any("XFORWARD" in x for x in client.extensions)
        message = variant(HARD, 1)
        replies = client.deliver("", rcpts, message, ident="4AB12C3D4E")
        assert [r[:4] for r in replies] == ["250 ", "250 "], replies
        assert all("parsed" in r for r in replies), replies
        got = rows(
            tmp_path / "s.db",
            "SELECT envelope_sender, envelope_recipient, extension, queue_id, state FROM raw_messages ORDER BY id",
        )
        assert got == [
            ("MAILER-DAEMON", rcpts[0], tok1, "4AB12C3D4E", "parsed"),
            ("MAILER-DAEMON", rcpts[1], None, "4AB12C3D4E", "parsed"),
        ]
        # the VERP recipient's event is verified for its tenant; the other one is not
        events = rows(tmp_path / "s.db", "SELECT address, tenant FROM events ORDER BY id")
        assert ("hard1@example.test", "acme") in events, events
        # the same delivery again (Postfix retrying after a lost reply): recognised, not recorded twice
        again = client.deliver("", rcpts[:1], message, ident="4AB12C3D4E")
        assert again[0].startswith("250 ") and "duplicate" in again[0], again
        assert rows(tmp_path / "s.db", "SELECT COUNT(*) FROM raw_messages") == [(2,)]
        # a second transaction on the same (cached) connection
        assert client.deliver("", ["bounces@bounce.example"], variant(HARD, 2))[0].startswith("250 ")
        client.close()
        metrics = server.metrics()
        assert "sidecar_lmtp_messages_total 3.0" in metrics
        assert 'sidecar_lmtp_replies_total{outcome="accepted"} 4.0' in metrics
        assert "sidecar_lmtp_connections_total 1.0" in metrics
    finally:
        server.stop()
    assert not sock.exists()  # removed at shutdown


def test_loopback_tcp_listener(tmp_path: Path) -> None:
    port = free_port()
    server = serve(tmp_path, f"tcp:{port}:interface=127.0.0.1")
    try:
        client = LmtpClient(("127.0.0.1", port))
        assert client.deliver("", ["bounces@bounce.example"], variant(HARD, 3))[0].startswith("250 ")
        assert client.command("HELO x") == "500 5.5.1 this is LMTP: say LHLO"
        client.close()
    finally:
        server.stop()


def test_port_in_use_is_a_one_line_startup_error(tmp_path: Path) -> None:
    import socket

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    taken = holder.getsockname()[1]
    cfg = tmp_path / "sidecar.toml"
    cfg.write_text(f'[ingest]\nlmtp = "tcp:{taken}:interface=127.0.0.1"\nsocket = ""\n')
    argv = [str(BIN), "--log-level", "WARNING", "serve", "--config", str(cfg), "--db", f"sqlite:///{tmp_path}/s.db"]
    argv += ["--policy", f"tcp:{free_port()}:interface=127.0.0.1", "--http", f"tcp:{free_port()}:interface=127.0.0.1"]
    try:
        done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    finally:
        holder.close()
    lines = [line for line in done.stderr.splitlines() if line]
    assert done.returncode == 1, done.stderr
    assert len(lines) == 1 and "cannot start" in lines[0], lines
    assert f"ingest.lmtp 'tcp:{taken}:interface=127.0.0.1'" in lines[0] and "in use" in lines[0], lines


def test_database_locked_is_451_then_recorded_once_on_retry(tmp_path: Path) -> None:
    """A transaction that cannot be written (SQLite locked past its busy timeout) is answered 451,
    never 250 and never 5xx: Postfix keeps the DSN and the retry records it, once."""
    sock = tmp_path / "lmtp.sock"
    server = serve(tmp_path, str(sock))
    try:
        client = LmtpClient(str(sock), timeout=120)
        message = variant(HARD, 7)
        holder = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
        try:
            holder.execute("BEGIN EXCLUSIVE")
            reply = client.deliver("", ["bounces@bounce.example"], message)[0]
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert reply.startswith("451 4.3.0 not recorded, try again later: OperationalError"), reply
        assert rows(tmp_path / "s.db", "SELECT COUNT(*) FROM raw_messages") == [(0,)]
        again = client.deliver("", ["bounces@bounce.example"], message)[0]
        assert again.startswith("250 2.0.0 Ok: parsed"), again
        assert rows(tmp_path / "s.db", "SELECT COUNT(*) FROM raw_messages") == [(1,)]
        client.close()
        assert 'sidecar_lmtp_replies_total{outcome="tempfail"} 1.0' in server.metrics()
    finally:
        server.stop()
