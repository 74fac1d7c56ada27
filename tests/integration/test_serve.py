"""`sidecar serve` over real sockets with a real SQLite file."""

import os
import signal
import socket
import time
from pathlib import Path

import pytest

from tests.harness.policy import fixtures, rcpt
from tests.harness.sidecar import SidecarProcess, run_cli

LIMIT = """
[ratelimit]
persist_interval = "200ms"

[[ratelimit.rules]]
name = "per-app"
key = ["sasl_username"]
count = "recipients"
limits = [{ rate = 3, per = "1h" }]
"""


@pytest.fixture
def sidecar(tmp_path):
    sc = SidecarProcess(tmp_path, f"sqlite:///{tmp_path}/sidecar.db", LIMIT)
    yield sc
    sc.stop()


def test_answers_every_real_postfix_request(sidecar):
    sidecar.start()
    c = sidecar.connect()
    for r in fixtures():
        assert c.ask(dict(r["attrs"])) == "DUNNO"
    c.close()
    text = sidecar.metrics()
    assert 'sidecar_policy_requests_total{action="DUNNO",state="RCPT"}' in text
    # every metric family the running service exports is in docs/metrics.md
    doc = (Path(__file__).resolve().parents[2] / "docs" / "metrics.md").read_text()
    served = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE sidecar_")}
    served = {n for n in served if not n.endswith("_created")}
    assert len(served) >= 15
    assert not sorted(n for n in served if f"`{n}" not in doc), "add to docs/metrics.md"


def test_suppression_from_another_process_applies_within_a_second(sidecar):
    sidecar.start()
    c = sidecar.connect()
    assert c.ask(rcpt(recipient="gone@example.test")) == "DUNNO"
    run_cli("suppressions", "add", "Gone@Example.test", "--reason", "hard bounce", db=sidecar.db)
    t0 = time.monotonic()
    while c.ask(rcpt(recipient="gone@example.test")) == "DUNNO":
        assert time.monotonic() - t0 < 1.0, "suppression not applied within 1 s"
        time.sleep(0.02)
    reply = c.ask(rcpt(recipient="gone@example.test"))
    assert reply.startswith("550 5.1.1 <gone@example.test>: recipient suppressed (hard bounce 20")
    run_cli("suppressions", "remove", "gone@example.test", db=sidecar.db)
    t0 = time.monotonic()
    while c.ask(rcpt(recipient="gone@example.test")) != "DUNNO":
        assert time.monotonic() - t0 < 1.0, "removal not applied within 1 s"
        time.sleep(0.02)


def test_expiring_suppression_stops_applying_without_restart(sidecar):
    sidecar.start()  # before the add: a slow start-up must not eat the expiry
    c = sidecar.connect()
    run_cli("suppressions", "add", "soon@example.test", "--expires", "4s", db=sidecar.db)
    t0 = time.monotonic()
    while not c.ask(rcpt(recipient="soon@example.test")).startswith("550"):
        assert time.monotonic() - t0 < 2.0, "suppression not applied"
        time.sleep(0.02)
    while c.ask(rcpt(recipient="soon@example.test")) != "DUNNO":
        assert time.monotonic() - t0 < 8.0, "expired suppression still applied"
        time.sleep(0.1)


def _gauge(text: str, name: str) -> float:
    return float(next(line.split()[1] for line in text.splitlines() if line.startswith(name + " ")))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_rate_limit_counters_survive_restart(sidecar, sig):
    sidecar.start()
    c = sidecar.connect()
    req = rcpt(sasl_username="app1", recipient="x@example.test")
    assert [c.ask(req) for _ in range(3)] == ["DUNNO"] * 3
    assert c.ask(req).startswith("DEFER_IF_PERMIT 4.7.1 rate limit per-app exceeded")
    time.sleep(0.6)  # > persist_interval
    c.close()
    sidecar.stop(sig)
    sidecar.start()
    c = sidecar.connect()
    assert c.ask(req).startswith("DEFER_IF_PERMIT 4.7.1")
    keys_before = _gauge(sidecar.metrics(), "sidecar_ratelimit_keys")
    assert keys_before >= 1  # app1's key, restored
    assert c.ask(rcpt(sasl_username="app2")) == "DUNNO"
    assert _gauge(sidecar.metrics(), "sidecar_ratelimit_keys") == keys_before + 1  # at once, not at the prune
    shown = run_cli("limits", "show", "per-app:app1", db=sidecar.db, config=sidecar.config).stdout
    assert "used 3, remaining 0" in shown
    run_cli("limits", "reset", "per-app:app1", db=sidecar.db, config=sidecar.config)
    t0 = time.monotonic()
    while c.ask(req) != "DUNNO":
        assert time.monotonic() - t0 < 1.5
        time.sleep(0.05)


def test_bad_clients_cost_only_their_connection(sidecar):
    sidecar.start()
    good = sidecar.connect()
    assert good.ask(rcpt()) == "DUNNO"
    idle = [socket.create_connection(("127.0.0.1", sidecar.policy_port)) for _ in range(300)]
    bad_inputs = [
        b"\x00\xff" * 1000 + b"\n\n",
        b"x=" + b"a" * (1024 * 1024),
        b"no equals\n\n",
        b"request=smtpd_access_policy\nprotocol_state=RC",
    ]
    for data in bad_inputs:
        s = socket.create_connection(("127.0.0.1", sidecar.policy_port), timeout=5)
        try:
            s.sendall(data)
        except OSError:
            pass
        if data.endswith(b"RC"):
            s.close()
            continue
        s.settimeout(5)
        try:
            assert s.recv(100) == b""  # closed by the server, no reply
        except ConnectionResetError:
            pass
        s.close()
    assert good.ask(rcpt()) == "DUNNO"
    other = sidecar.connect()
    assert other.ask(rcpt()) == "DUNNO"
    for s in idle:
        s.close()
    m = sidecar.metrics()
    assert 'sidecar_policy_bad_input_total{problem="line-too-long"} 1.0' in m
    assert 'sidecar_policy_bad_input_total{problem="no-equals"} 1.0' in m
    assert "went away in the middle of a request" in sidecar.log.read_text()


def test_import_export_roundtrip(tmp_path):
    db = f"sqlite:///{tmp_path}/s.db"
    src = tmp_path / "in.csv"
    src.write_text(
        "address,tenant,reason,expires_at\nA@Example.test,,hard bounce,\nb@example.test,shop,complaint,"
        "2099-01-01T00:00:00Z\n"
    )
    run_cli("suppressions", "import", str(src), db=db)
    out = run_cli("suppressions", "export", "-", db=db).stdout.splitlines()
    assert out[0].startswith("address,tenant,reason")
    assert any(line.startswith("a@example.test,,hard bounce") for line in out)
    assert any(line.startswith("b@example.test,shop,complaint") and "2099-01-01T00:00:00Z" in line for line in out)
    bad = tmp_path / "bad.csv"
    bad.write_text("address\nnot-an-address\n")
    r = run_cli("suppressions", "import", str(bad), db=db, check=False)
    assert r.returncode == 2 and "line 2" in r.stderr and "no '@'" in r.stderr


def test_check_config_names_the_key(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[server]\npolicy = ["nope"]\n')
    import subprocess

    from tests.harness.sidecar import BIN

    r = subprocess.run([str(BIN), "check-config", "--config", str(cfg)], capture_output=True, text=True)
    assert r.returncode == 78 and "server.policy[0]" in r.stderr
    # no file anywhere: where it looked (one line, 78); SIDECAR_CONFIG names the file
    env = {k: v for k, v in os.environ.items() if k != "SIDECAR_CONFIG"}
    r = subprocess.run([str(BIN), "check-config"], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert r.returncode == 78 and "/etc/postfix-sidecar/sidecar.toml" in r.stderr
    (tmp_path / "good.toml").write_text('[server]\nsafe_action = "DUNNO"\n')
    env["SIDECAR_CONFIG"] = str(tmp_path / "good.toml")
    r = subprocess.run([str(BIN), "check-config"], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and "good.toml: configuration OK" in r.stdout
