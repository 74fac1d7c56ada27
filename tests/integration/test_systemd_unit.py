"""The shipped systemd unit and what it relies on in ``sidecar serve``.

- ``systemd-analyze security --offline=yes`` scores the unit under 2.0 ("OK");
- ``Type=notify``: READY=1 reaches $NOTIFY_SOCKET (a unix datagram socket this test binds)
  only once the policy port answers; STOPPING=1 on SIGTERM;
- SIGHUP re-reads and validates the configuration: a bad file is one log line and the
  service keeps answering; RELOADING=1 then READY=1.
"""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from tests.harness.policy import PolicyClient
from tests.harness.sidecar import SidecarProcess

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "contrib" / "systemd" / "postfix-sidecar.service"
THRESHOLD = 2.0

REQUEST = {
    "request": "smtpd_access_policy",
    "protocol_state": "RCPT",
    "sender": "app@example.com",
    "recipient": "someone@example.net",
    "client_address": "127.0.0.1",
}


def test_unit_scores_ok_in_systemd_analyze_security(tmp_path: Path) -> None:
    exe = shutil.which("systemd-analyze")
    assert exe, "systemd-analyze is missing: .ci/system-deps installs the systemd package"
    # --threshold takes the score times ten; the command fails above it
    r = subprocess.run(
        [exe, "security", "--offline=yes", f"--threshold={int(THRESHOLD * 10)}", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", r.stdout)
    assert m, r.stdout + r.stderr
    assert float(m.group(1)) < THRESHOLD, r.stdout
    assert r.returncode == 0, r.stdout + r.stderr


def test_unit_is_the_one_shipped_in_the_package() -> None:
    from sidecar.cli.files import shipped_text

    text = shipped_text("postfix-sidecar.service")
    assert text == UNIT.read_text()
    for line in ("Type=notify", "Restart=on-failure", "StateDirectory=postfix-sidecar", "ProtectSystem=strict"):
        assert line in text.splitlines()


class NotifySocket:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))

    def next(self, timeout: float = 30) -> dict[str, str]:
        self.sock.settimeout(timeout)
        data = self.sock.recv(4096).decode()
        return dict(line.split("=", 1) for line in data.splitlines())

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    ns = NotifySocket(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", str(ns.path))
    yield ns
    ns.close()


def _start_in_background(sc: SidecarProcess) -> None:
    """Popen only: the test, not /healthz polling, watches for readiness."""
    with open(sc.log, "ab") as logf:
        sc.proc = subprocess.Popen(
            sc.argv(), cwd=sc.tmp, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )


def test_ready_only_once_the_policy_port_answers_and_stopping_on_term(
    tmp_path: Path, notify_socket: NotifySocket
) -> None:
    sc = SidecarProcess(tmp_path, f"sqlite:///{tmp_path}/s.db")
    try:
        _start_in_background(sc)
        msg = notify_socket.next()
        assert msg.get("READY") == "1", (msg, sc.log_tail())
        assert "tcp:" in msg.get("STATUS", "")
        client = PolicyClient(sc.policy_port)  # answers at once: READY=1 came after the listeners
        try:
            assert client.ask(REQUEST) == "DUNNO"
        finally:
            client.close()
        assert sc.proc is not None
        sc.proc.send_signal(signal.SIGTERM)
        assert notify_socket.next().get("STOPPING") == "1"
        assert sc.proc.wait(20) == 0
    finally:
        sc.stop()


def test_sighup_rereads_the_configuration_and_a_bad_file_keeps_the_old_one(
    tmp_path: Path, notify_socket: NotifySocket
) -> None:
    sc = SidecarProcess(tmp_path, f"sqlite:///{tmp_path}/s.db", config_text='[server]\nsafe_action = "DUNNO"\n')
    try:
        _start_in_background(sc)
        assert notify_socket.next().get("READY") == "1", sc.log_tail()
        assert sc.proc is not None and sc.config is not None

        sc.config.write_text("[server]\nsafe_action = 42\nno_such_key = 1\n")
        sc.proc.send_signal(signal.SIGHUP)
        assert notify_socket.next().get("RELOADING") == "1"
        assert notify_socket.next().get("READY") == "1"
        errors = [line for line in sc.log.read_text().splitlines() if "reload:" in line]
        assert len(errors) == 1 and "ERROR" in errors[0] and "still running" in errors[0], errors
        assert sc.proc.poll() is None
        client = PolicyClient(sc.policy_port)
        try:
            assert client.ask(REQUEST) == "DUNNO"
        finally:
            client.close()

        sc.config.write_text('[server]\nsafe_action = "451 4.3.5 try later"\n')
        sc.proc.send_signal(signal.SIGHUP)
        assert notify_socket.next().get("RELOADING") == "1"
        assert notify_socket.next().get("READY") == "1"
        last = [line for line in sc.log.read_text().splitlines() if "reload:" in line][-1]
        assert "configuration OK; applied [server.safe_action]" in last, last  # the one live setting
        assert sc.proc.poll() is None
    finally:
        sc.stop()
