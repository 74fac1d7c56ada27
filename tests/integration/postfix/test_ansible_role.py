"""The Ansible role (ansible/roles/postfix_sidecar) converged with ansible-playbook, connection
local, against a private Postfix instance from the lab harness and a private prefix. The role
installs a local wheel with pip --no-index (dependencies repacked from this environment: only
loopback is contacted) and runs `sidecar serve` under start-stop-daemon (no systemd here).
Everything started is stopped by PID and removed, also on failure (see docs/deploy.md)."""

from __future__ import annotations

import contextlib
import grp
import json
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from lab_policy import policy_query
from lab_postfix import BOUNCE_DOMAIN, MASTER_CF_BASE, PostfixLab, wait_until
from lab_sink import SmtpSink

from sidecar.bounce.verp import make_verp_sender
from sidecar.postfix_config import FAIL_CLOSED
from tests.harness.system import free_port, pid_alive
from tests.harness.wheelhouse import build_wheelhouse

pytestmark = pytest.mark.postfix

REPO = Path(__file__).resolve().parents[3]
ROLE_USER = "sidecar-lab"  # created by the role, removed at teardown
HARD = "hard@example.test"
VERP_KEY = "role-verp-key"
SENDER = f"bounces@{BOUNCE_DOMAIN}"
RECAP = re.compile(r"^localhost\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.MULTILINE)


# ---------------------------------------------------------------------------------------
# The private Postfix instance, without the sidecar wiring (the role adds it)


class BarePostfix(PostfixLab):
    """The lab instance's own settings only; the role puts in the wiring, and start()
    must not overwrite what the role wrote."""

    def write_config(self) -> dict[str, str]:
        main, master = self.config_dir / "main.cf", self.config_dir / "master.cf"
        if not main.exists():
            self.config_dir.mkdir(parents=True, exist_ok=True)
            settings = "".join(f"{k} = {v}\n" for k, v in self.lab_settings().items())
            main.write_text("# lab instance settings\n" + settings)
            master.write_text(MASTER_CF_BASE.format(smtpd_listen=f"127.0.0.1:{self.smtpd_port}"))
        return {"main.cf": main.read_text(), "master.cf": master.read_text()}


@dataclass
class Deployment:
    root: Path
    postfix: BarePostfix
    sink: SmtpSink
    policy_port: int
    http_port: int
    prefix: Path = field(init=False)
    config_file: Path = field(init=False)
    pidfile: Path = field(init=False)

    def __post_init__(self) -> None:
        self.prefix, self.config_file = self.root / "opt", self.root / "etc" / "sidecar.toml"
        self.pidfile = self.root / "run" / "postfix-sidecar.pid"

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The deployed `sidecar` with the deployed configuration."""
        argv = [str(self.prefix / "bin" / "sidecar"), *args, "--config", str(self.config_file)]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)

    def role_vars(self, wheel: Path) -> dict[str, Any]:
        r = self.root
        return {
            "postfix_sidecar_user": ROLE_USER,
            "postfix_sidecar_group": ROLE_USER,
            "postfix_sidecar_prefix": str(self.prefix),
            # the role's default source: a wheelhouse on the controller (here the same host)
            "postfix_sidecar_wheelhouse": str(wheel.parent),
            "postfix_sidecar_config_dir": str(r / "etc"),
            "postfix_sidecar_data_dir": str(r / "lib"),
            "postfix_sidecar_run_dir": str(r / "run"),
            "postfix_sidecar_log_dir": str(r / "log"),
            "postfix_sidecar_postfix_config_dir": str(self.postfix.config_dir),
            "postfix_sidecar_manage_postfix_service": False,
            "postfix_sidecar_config": {
                "server": {
                    "policy": [f"tcp:{self.policy_port}:interface=127.0.0.1"],
                    "http": f"tcp:{self.http_port}:interface=127.0.0.1",
                },
                "database": {"sync_interval": "0.2s"},
                "ingest": {"verp_key": VERP_KEY},
                "postfix": {"bounce_domain": BOUNCE_DOMAIN, "default_action": FAIL_CLOSED, "policy_timeout": "5s"},
            },
        }

    def converge(self) -> tuple[int, str]:
        """Run ansible/site.yml; return (changed count, output)."""
        interpreter = "/usr/bin/python3"
        if subprocess.run([interpreter, "-c", "import packaging"], capture_output=True).returncode != 0:
            interpreter = sys.executable  # ansible.builtin.pip needs packaging on the target
        host = {"ansible_connection": "local", "ansible_python_interpreter": interpreter, "ansible_become": False}
        inventory = self.root / "inventory.json"
        inventory.write_text(json.dumps({"postfix_relays": {"hosts": {"localhost": host}}}))
        env = {
            **os.environ,
            "ANSIBLE_CONFIG": str(REPO / "ansible" / "ansible.cfg"),
            "ANSIBLE_HOME": str(self.root / "ansible-home"),
            "ANSIBLE_LOCAL_TEMP": str(self.root / "ansible-tmp"),
            "ANSIBLE_NOCOLOR": "1",
        }
        result = subprocess.run(
            [
                str(Path(sys.executable).parent / "ansible-playbook"),
                "-i",
                str(inventory),
                str(REPO / "ansible" / "site.yml"),
                "-e",
                f"@{self.root / 'vars.json'}",
            ],
            capture_output=True,
            text=True,
            env=env,
            cwd=self.root,
            timeout=300,
        )
        output = result.stdout + result.stderr
        recap = RECAP.search(output)
        assert result.returncode == 0 and recap and recap.group(4) == "0", f"ansible-playbook failed:\n{output}"
        return int(recap.group(2)), output

    def sidecar_pids(self) -> list[int]:
        """Running programs from our prefix (serve; an ingest in flight), pidfile's first."""

        def ours(pid: int) -> bool:
            with contextlib.suppress(OSError):
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:2]
                return pid_alive(pid) and any(a.startswith(str(self.prefix).encode()) for a in argv)
            return False

        pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]
        with contextlib.suppress(OSError, ValueError):
            pids.insert(0, int(self.pidfile.read_text().split()[0]))
        return list(dict.fromkeys(p for p in pids if ours(p)))

    def stop_sidecar(self) -> None:
        for pid in self.sidecar_pids():
            for sig in (signal.SIGTERM, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
                with contextlib.suppress(AssertionError):
                    wait_until(lambda p=pid: not pid_alive(p), 10, what=f"sidecar PID {pid} to exit")
                if not pid_alive(pid):
                    break
            assert not pid_alive(pid), f"sidecar PID {pid} survived TERM and KILL"


def _remove_role_user() -> None:
    for tool in ("userdel", "groupdel"):
        subprocess.run([tool, ROLE_USER], capture_output=True, check=False)


@pytest.fixture
def deployment(request: pytest.FixtureRequest, postfix_installed: None) -> Generator[Deployment, None, None]:
    root = Path(tempfile.mkdtemp(prefix="sidecar-ansible-", dir="/tmp"))
    os.chmod(root, 0o755)  # the role's user and postfix traverse it
    sink = SmtpSink()
    sink.rcpt_replies[HARD] = f"550 5.1.1 <{HARD}>: user unknown"
    postfix = BarePostfix(root / "postfix", sink_port=0, values={})
    dep = Deployment(root, postfix, sink, free_port(), free_port())
    try:
        sink.start()
        postfix.sink_port = sink.port
        (root / "postfix").mkdir(mode=0o755)
        postfix.write_config()
        postfix.queue_dir.mkdir()  # what start() prepares, so that `postfix check` passes before it
        postfix.log_file.parent.mkdir()
        postfix.data_dir.mkdir(mode=0o700)
        os.chown(postfix.data_dir, pwd.getpwnam("postfix").pw_uid, pwd.getpwnam("postfix").pw_gid)
        yield dep
    finally:
        rep = getattr(request.node, "rep_call", None)
        if rep is not None and rep.failed:
            print(f"--- postfix log ---\n{postfix.log_tail(60)}")
            with contextlib.suppress(OSError):
                print(f"--- sidecar log ---\n{(root / 'log' / 'postfix-sidecar.log').read_text()[-6000:]}")
        errors = []
        for step in (dep.stop_sidecar, postfix.stop, sink.stop, _remove_role_user):
            try:
                step()
            except BaseException as exc:
                errors.append(exc)
        shutil.rmtree(root, ignore_errors=True)
        if errors:
            raise errors[0]


def _healthz(port: int) -> int | None:
    with contextlib.suppress(OSError), urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
        return int(resp.status)
    return None


def test_role_deploys_the_sidecar_and_wires_postfix(deployment: Deployment) -> None:
    dep, postfix = deployment, deployment.postfix
    wheel = build_wheelhouse(dep.root / "wheels")
    role_vars = dep.role_vars(wheel)
    (dep.root / "vars.json").write_text(json.dumps(role_vars))

    changed, output = dep.converge()
    assert changed > 0, output
    sidecar = dep.prefix / "bin" / "sidecar"
    # the wiring is the templates', rendered for the deployed configuration
    check = postfix.run("postfix", "check", check=False)
    assert (check.returncode, check.stdout + check.stderr) == (0, ""), check
    main = postfix.run("postconf", "-n").stdout
    policy = f"check_policy_service inet:127.0.0.1:{dep.policy_port}"
    assert f"smtpd_recipient_restrictions = {policy}, permit_mynetworks, " in main, main
    assert f"smtpd_end_of_data_restrictions = {policy}\n" in main, main
    assert f"transport_maps = inline:{{ {BOUNCE_DOMAIN}=sidecar-bounce: }}" in main
    service = postfix.run("postconf", "-M", "sidecar-bounce/unix").stdout
    # the thin form of `sidecar ingest`: the prefix's Python running the prefix's pipe entry
    thin = f"-I -S {dep.prefix}/lib/"
    assert f"user={ROLE_USER}" in service and f"argv={dep.prefix}/bin/python" in service and thin in service, service
    assert f"/sidecar/bounce/pipe_entry.py --config={dep.config_file} " in service, service
    # the role's sidecar serve: our prefix, our configuration, the role's user
    [pid] = dep.sidecar_pids()
    assert int(dep.pidfile.read_text()) == pid
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    assert argv[-4:] == ["serve", "--config", str(dep.config_file), ""] and str(sidecar) in argv, argv
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    assert int(status["Uid"].split()[0]) == pwd.getpwnam(ROLE_USER).pw_uid
    wait_until(lambda: _healthz(dep.http_port) == 200, 30, what="the deployed sidecar's /healthz")
    # the hand-off socket: the user's and its group's only, in a directory of its own
    sock = dep.root / "run" / "ingest" / "ingest.sock"
    group = grp.getgrnam(ROLE_USER).gr_gid
    assert (stat.S_IMODE(sock.stat().st_mode), sock.stat().st_gid) == (0o660, group)
    assert (stat.S_IMODE(sock.parent.stat().st_mode), sock.parent.stat().st_gid) == (0o750, group)
    assert f'socket_group = "{ROLE_USER}"' in dep.config_file.read_text()

    postfix.start()  # with the converged main.cf and master.cf
    result = postfix.send(SENDER, ["good@example.test"])
    assert result.accepted, result
    assert dep.sink.wait_for_message("good@example.test")[0].mail_from == SENDER

    # a suppression written to the deployed database is enforced by the deployed sidecar
    add = dep.cli("suppressions", "add", "bad@example.test", "--reason", "hard bounce")
    assert add.returncode == 0, add
    wait_until(
        lambda: policy_query(dep.policy_port, {"recipient": "bad@example.test", "sender": SENDER}) != "DUNNO",
        20,
        0.2,
        "the deployed policy server to know the suppression",
    )
    result = postfix.send(SENDER, ["bad@example.test"])
    code, text = result.rcpt["bad@example.test"]
    assert (result.stage, code) == ("rcpt", 550), result
    assert "<bad@example.test>: recipient suppressed (hard bounce" in text, result
    assert not dep.sink.rcpt_attempts_for("bad@example.test")

    # a DSN goes through the role's pipe(8) service into `sidecar ingest` as the role's user
    # (sent with a VERP sender: its signed token corroborates the bounce, see docs/ingest.md)
    assert postfix.send(make_verp_sender(VERP_KEY.encode(), HARD, SENDER), [HARD]).accepted
    postfix.wait_for_log(r"status=sent \(delivered via sidecar-bounce service\)")
    wait_until(lambda: HARD in dep.cli("suppressions", "list", "--json").stdout, 20, 0.2, f"suppression of {HARD}")

    changed, output = dep.converge()
    assert changed == 0, output
    assert dep.sidecar_pids() == [pid], "the second converge restarted the sidecar"

    # a changed setting: sidecar.toml and main.cf change, the handlers restart and reload
    role_vars["postfix_sidecar_config"]["postfix"]["policy_timeout"] = "7s"
    (dep.root / "vars.json").write_text(json.dumps(role_vars))
    mark = postfix.mark_log()
    changed, output = dep.converge()
    assert changed >= 4, output  # sidecar.toml, postconf -e, restart, reload
    assert postfix.run("postconf", "-h", "smtpd_policy_service_timeout").stdout.strip() == "7s"
    postfix.wait_for_log(r"reload -- version", since=mark)
    [new_pid] = dep.sidecar_pids()
    assert new_pid != pid, output
    wait_until(lambda: _healthz(dep.http_port) == 200, 30, what="the restarted sidecar's /healthz")
    wait_until(
        lambda: "recipient suppressed" in postfix.send(SENDER, ["bad@example.test"]).message,
        10,
        0.5,
        "Postfix to refuse bad@example.test after the reload",
    )
