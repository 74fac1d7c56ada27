"""Issue 10 (2, 9) with a real Postfix: a stored reason cannot inject answers into the policy
protocol, and slow or idle clients on the policy port cannot lock Postfix out.

Figures are printed (run with -s).
"""

from __future__ import annotations

import contextlib
import re
import socket
import sqlite3
import threading
import time
import urllib.request

import pytest
from lab_env import Lab, MakeLab
from lab_postfix import wait_until
from lab_sidecar import sidecar_cli

pytestmark = pytest.mark.postfix

SENDER = "app@lab.test"
# What a newline in a reason used to do: the reply for one RCPT became three answers, and
# Postfix took the second ("REJECT injected") as the answer to its next request.
CRAFTED = "hard\n\naction=REJECT injected\n\naction=OK"


def metric(lab: Lab, name: str) -> dict[str, float]:
    assert lab.server is not None
    with urllib.request.urlopen(lab.server.url + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {m[1] or "": float(m[2]) for m in re.finditer(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", text, re.M)}


def inject_reason(lab: Lab, address: str, reason: str) -> None:
    """Below every entry point's validation: the row and a change-feed entry, straight into SQLite."""
    path = lab.db_url.removeprefix("sqlite:///")
    with contextlib.closing(sqlite3.connect(path, timeout=10)) as db, db:
        db.execute("UPDATE suppressions SET reason = ? WHERE address = ?", (reason, address))
        db.execute(
            "INSERT INTO changes (kind, address, tenant, active, reason, created_at, expires_at, changed_at) "
            "SELECT 'suppression', address, tenant, active, reason, created_at, expires_at, ? "
            "FROM suppressions WHERE address = ?",
            (time.time(), address),
        )


def pipelined(lab: Lab, sender: str, recipients: list[str]) -> list[str]:
    """One SMTP transaction with PIPELINING (RFC 2920): MAIL, every RCPT and DATA in one write,
    so smtpd asks the policy server about each recipient without going back to its event loop
    (which would notice stray bytes on the policy connection and drop it). The replies in order."""
    with socket.create_connection(("127.0.0.1", lab.postfix.smtpd_port), timeout=30) as s, s.makefile("rb") as f:

        def reply() -> str:
            lines = []
            while True:
                line = f.readline().decode()
                lines.append(line.rstrip("\r\n"))
                if len(line) < 4 or line[3] != "-":
                    return "\n".join(lines)

        reply()  # the banner
        s.sendall(b"EHLO app.lab.test\r\n")
        assert "PIPELINING" in reply()
        rcpts = "".join(f"RCPT TO:<{r}>\r\n" for r in recipients)
        s.sendall(f"MAIL FROM:<{sender}>\r\n{rcpts}DATA\r\n".encode())
        replies = [reply() for _ in range(len(recipients) + 2)]
        if replies[-1].startswith("354"):
            s.sendall(b"Subject: pipelined\r\n\r\nhello\r\n.\r\n")
            replies.append(reply())
        s.sendall(b"QUIT\r\n")
    return replies


def test_a_newline_in_a_reason_cannot_answer_the_next_recipient(make_lab: MakeLab) -> None:
    lab = make_lab()
    blocked, fine = "crafted@example.test", "next-in-line@example.test"
    result = sidecar_cli("suppressions", "add", "--db", lab.db_url, "--reason", "bounce", blocked)
    assert result.returncode == 0, result.stderr + result.stdout
    lab.wait_policy_rejects(blocked, SENDER)
    inject_reason(lab, blocked, CRAFTED)
    wait_until(lambda: "(hard" in lab.policy_action(blocked, SENDER), 20, 0.2, "the crafted reason loaded")

    # Before: the reply was "... suppressed (hard" and two more answers followed on the same
    # connection. Postfix 3.7.11 did not take them for its next requests here, even pipelined
    # (it threw the unasked-for input away), but the reply to the client was cut short, and a
    # client that reads answers in order would have been answered "REJECT injected".
    mail, to_blocked, to_fine, data, *end = pipelined(lab, SENDER, [blocked, fine])
    assert mail.startswith("250"), mail
    assert re.match(r"550 .*suppressed \(hard\?\?action=REJECT injected\?\?action=OK \S+\)$", to_blocked), to_blocked
    assert to_fine.startswith("250"), to_fine
    assert data.startswith("354") and end and end[0].startswith("250"), (data, end)
    again = lab.postfix.send(SENDER, [fine])  # and the policy connection is still in step afterwards
    assert again.accepted, again
    [first, second] = lab.sink.wait_for_message(fine, count=2)
    assert blocked not in first.rcpt_tos
    lab.postfix.wait_queue_empty()
    assert not re.findall(r"warning: .*policy", lab.postfix.log_text())
    server_log = lab.server.log.read_text(errors="replace") if lab.server else ""
    assert "policy reply had control or unprintable characters" in server_log


class Dribbler:
    """Slowloris from 127.0.0.1: ``n`` connections, one byte on each every second, each one
    reopened (at the next tick) when the server closes it."""

    REQUEST_START = b"request=smtpd_access_policy\nprotocol_state=RCPT\nrecipient=slow@example.test\nsender=x"

    def __init__(self, port: int, n: int) -> None:
        self.port, self.n = port, n
        self.socks: list[tuple[socket.socket, int]] = []  # (socket, bytes sent)
        self.opened = self.closed = 0
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, daemon=True, name="dribbler")

    def _open(self) -> None:
        s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        s.setblocking(False)
        self.socks.append((s, 0))
        self.opened += 1

    def tick(self) -> None:
        alive = []
        for s, sent in self.socks:
            try:
                if s.recv(4096) == b"":
                    raise ConnectionResetError
            except BlockingIOError:
                pass
            except OSError:
                s.close()
                self.closed += 1
                continue
            try:
                s.send(self.REQUEST_START[sent % len(self.REQUEST_START) :][:1])
                alive.append((s, sent + 1))
            except OSError:
                s.close()
                self.closed += 1
        self.socks = alive
        while len(self.socks) < self.n:
            self._open()

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                self.tick()
                self.stop.wait(1.0)
        except BaseException as exc:
            self.errors.append(exc)

    def start(self) -> Dribbler:
        self.tick()
        self.thread.start()
        return self

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(10)
        for s, _ in self.socks:
            s.close()
        assert not self.errors, self.errors


def test_dribbling_clients_cannot_lock_postfix_out(make_lab: MakeLab) -> None:
    max_connections = attackers = 40  # with Postfix's and the probes' connections, more than fit
    lab = make_lab(config={"server": {"max_connections": max_connections, "request_timeout": "3s"}})
    blocked = "slow-blocked@example.test"
    result = sidecar_cli("suppressions", "add", "--db", lab.db_url, "--reason", "bounce", blocked)
    assert result.returncode == 0, result.stderr + result.stdout
    lab.wait_policy_rejects(blocked, SENDER)

    slow = Dribbler(lab.policy_port, attackers).start()
    timings: list[float] = []
    probes: list[float] = []
    try:
        time.sleep(1.5)  # the table is full of dribblers before Postfix asks anything
        started = time.monotonic()
        n = 0
        while time.monotonic() - started < 8 or n < 4:  # past a few request timeouts
            t0 = time.monotonic()
            good = lab.postfix.send(SENDER, [f"served{n}@example.test"])
            bad = lab.postfix.send(SENDER, [blocked])
            timings.append(time.monotonic() - t0)
            assert good.accepted, good
            assert (bad.stage, bad.code) == ("rcpt", 550) and "suppressed" in bad.message, bad
            t0 = time.monotonic()
            assert lab.policy_action(f"probe{n}@example.test", SENDER) == "DUNNO"
            probes.append(time.monotonic() - t0)
            n += 1
            time.sleep(0.25)
        connections = metric(lab, "sidecar_policy_connections")[""]
    finally:
        slow.finish()
    for i in range(n):
        lab.sink.wait_for_message(f"served{i}@example.test")
    lab.postfix.wait_queue_empty()
    warnings = re.findall(r"warning: .*(?:policy|problem talking)", lab.postfix.log_text())
    assert not warnings, warnings[:3]
    closed = metric(lab, "sidecar_policy_bad_input_total")
    timed_out, evicted = closed.get('{problem="request-timeout"}', 0), closed.get('{problem="evicted"}', 0)
    assert timed_out + evicted >= attackers, closed
    assert connections <= max_connections
    print(
        f"\n[policy-figure] {attackers} dribbling connections (1 byte/s, reopened when closed; "
        f"{slow.opened} opened) against max_connections={max_connections}, request_timeout=3s: "
        f"{2 * n} SMTP transactions through Postfix answered correctly, slowest pair "
        f"{max(timings) * 1000:.0f} ms; {n} fresh-connection policy queries, slowest "
        f"{max(probes) * 1000:.1f} ms; closed: {timed_out:.0f} request-timeout, {evicted:.0f} evicted",
        flush=True,
    )
