"""The Ansible role on a fleet under real systemd: two Postfix relays as ``systemd-nspawn --boot``
containers, each in its own network namespace, sharing PostgreSQL and Redis that run in a third.

The topology (tests/harness/fleet.py): a bridge with the host at .1, the database namespace at .2,
the relays at .11 and .12, no default route anywhere. The relays boot a cached Debian 12 root
(systemd, Postfix, python3-venv; .ci/nspawn-root) over a throwaway overlay. Ansible runs inside
each relay (connection local, this checkout's ansible-playbook, read-only bind mounts), both at
once, and installs the package from a wheelhouse built here (bind-mounted where the role keeps
it on a target, so its file-by-file copy, the role test's, is skipped): the containers reach no
index.
Relayed mail goes to an SMTP sink on the host's bridge address (relayhost, DNS disabled).

Checked, with the figures printed:
- two converges; the second changes nothing on either relay;
- the shipped unit on relay 1 (what the one-container test checked): ``systemctl start`` and
  ``restart`` return only after READY=1 (the policy port answers at once, no retry), Type=notify,
  the dedicated user, the state and hand-off directories; a SIGKILL comes back
  (Restart=on-failure); ``systemctl reload`` with a bad file keeps it running with one error line;
- a message relayed through each relay; rate-limit counters in the shared Redis;
- a bounce ingested on relay 1 (the sink refuses a recipient, Postfix's DSN goes through pipe(8)
  into ``sidecar ingest``) is refused at RCPT on relay 2 within 2 s of reaching PostgreSQL.

Teardown (also on failure): containers powered off by PID, PostgreSQL and Redis stopped,
namespaces, veths and the bridge deleted, temporary files removed. A run killed before its
teardown leaves names carrying its PID; the next run removes them first.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import smtplib
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from sidecar.bounce.verp import make_verp_sender
from tests.harness.fleet import Container, Network, container_root, sweep_leftovers
from tests.harness.services import PostgresServer, RedisServer
from tests.harness.wheelhouse import build_wheelhouse
from tests.integration.postfix.lab_sink import SmtpSink

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent  # runs inside the relays as it is (same Debian 12 python3)
UNIT = "postfix-sidecar.service"
BOUNCE_DOMAIN = "bounce.fleet.test"
SENDER = f"bounces@{BOUNCE_DOMAIN}"
HARD = "hard@example.test"
VERP_KEY = "fleet-verp-key"
CONFIG_FILE = "/etc/postfix-sidecar/sidecar.toml"
RECAP = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.MULTILINE)

ASK_POLICY = "\n".join(
    [
        "import socket",
        's = socket.create_connection(("127.0.0.1", 10031), timeout=5)',
        r's.sendall(b"request=smtpd_access_policy\nprotocol_state=RCPT\nsender=a@example.com\n"',
        r'          b"recipient=b@example.net\nclient_address=127.0.0.1\n\n")',
        "print(s.recv(1024).decode().strip())",
    ]
)


@dataclass
class Fleet:
    net: Network
    staging: Path
    pg: PostgresServer
    redis: RedisServer
    sink: SmtpSink
    relays: dict[str, tuple[Container, str]] = field(default_factory=dict)  # name: (container, address)
    times: dict[str, float] = field(default_factory=dict)
    slowest: dict[str, str] = field(default_factory=dict)  # relay: its last converge's slowest tasks

    def role_vars(self) -> dict[str, Any]:
        return {
            "postfix_sidecar_wheelhouse": str(self.staging / "wheels"),
            "postfix_sidecar_extras": ["postgresql", "redis"],
            "postfix_sidecar_database_url": self.pg.url("sidecar"),
            "postfix_sidecar_config": {
                "server": {"policy": ["tcp:10031:interface=127.0.0.1"], "http": "tcp:9731:interface=127.0.0.1"},
                "database": {"sync_interval": "0.2s"},
                "ingest": {"verp_key": VERP_KEY},
                "postfix": {"bounce_domain": BOUNCE_DOMAIN, "policy_timeout": "5s"},
                "ratelimit": {
                    "backend": "redis",
                    "redis_url": self.redis.url,
                    "rules": [
                        {
                            "name": "per-sender",
                            "key": ["sender"],
                            "count": "recipients",
                            "limits": [{"rate": 1000, "per": "1h"}],
                        }
                    ],
                },
            },
            "postfix_sidecar_postfix_extra_settings": {
                "relayhost": f"[{self.net.host}]:{self.sink.port}",
                "smtp_dns_support_level": "disabled",
                "smtpd_peername_lookup": "no",
                "mynetworks": f"127.0.0.0/8 {self.net.cidr}",
            },
        }

    def converge(self) -> dict[str, int]:
        """ansible-playbook inside every relay at once; {relay: changed}."""
        env = {
            **os.environ,
            "ANSIBLE_CONFIG": str(REPO / "ansible" / "ansible.cfg"),
            "ANSIBLE_HOME": "/tmp/ansible-home",  # the container's own /tmp
            "ANSIBLE_LOCAL_TEMP": "/tmp/ansible-tmp",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_PIPELINING": "1",
            # per-task times (ansible-core's junit callback), for the slowest tasks in the output
            "ANSIBLE_CALLBACKS_ENABLED": "ansible.builtin.junit",
            "JUNIT_OUTPUT_DIR": "/tmp/ansible-junit",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        runs = {}
        for name, (c, _) in self.relays.items():
            c.run("rm", "-rf", "/tmp/ansible-junit")
            inventory = self.staging / f"inventory-{name}.json"
            host = {
                "ansible_connection": "local",
                "ansible_python_interpreter": "/usr/bin/python3",
                "ansible_become": False,
            }
            inventory.write_text(json.dumps({"postfix_relays": {"hosts": {name: host}}}))
            argv = [str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), str(REPO / "ansible" / "site.yml")]
            argv += ["-e", f"@{self.staging / 'vars.json'}"]
            runs[name] = subprocess.Popen(
                [*c.nsenter(), *argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
            )
        changed = {}
        for name, proc in runs.items():
            output, _ = proc.communicate(timeout=600)
            recap = {m.group(1): m.groups()[1:] for m in RECAP.finditer(output)}
            ok = proc.returncode == 0 and name in recap and recap[name][2:] == ("0", "0")
            assert ok, f"ansible-playbook on {name} failed:\n{output[-8000:]}"
            changed[name] = int(recap[name][1])
            self.slowest[name] = slowest_tasks(self.relays[name][0])
        return changed

    def smtp(
        self, relay: str, recipients: list[str], sender: str = SENDER, data: bool = True
    ) -> dict[str, tuple[int, str]]:
        """One message from the host through ``relay``; the RCPT replies. DATA only if a recipient
        was taken and ``data``: without it the transaction is abandoned (nothing is relayed)."""
        replies = {}
        with smtplib.SMTP(self.relays[relay][1], 25, local_hostname="client.fleet.test", timeout=20) as s:
            s.ehlo()
            code, msg = s.mail(sender)
            assert code == 250, (code, msg)
            for rcpt in recipients:
                code, msg = s.rcpt(rcpt)
                replies[rcpt] = (code, msg.decode())
            if data and any(code == 250 for code, _ in replies.values()):
                body = f"From: {sender}\r\nTo: {', '.join(recipients)}\r\nSubject: fleet\r\n\r\nvia {relay}\r\n"
                code, msg = s.data(body)
                assert code == 250, (code, msg)
        return replies


def slowest_tasks(c: Container, count: int = 4) -> str:
    """The slowest tasks of the relay's last converge, from the junit callback's report."""
    xml = c.run("sh", "-c", "cat /tmp/ansible-junit/*.xml").stdout
    tags = [dict(re.findall(r'(\w+)="([^"]*)"', tag)) for tag in re.findall(r"<testcase\b([^>]*)>", xml)]
    cases = [(float(t.get("time", 0)), t.get("name", "?")) for t in tags]
    return ", ".join(f"{n.split(' : ')[-1][:48]} {t:.1f}s" for t, n in sorted(cases, reverse=True)[:count])


def wait(what: str, predicate: Callable[[], object], timeout: float, details: Callable[[], str] = str) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} within {timeout}s\n{details()}")


@pytest.fixture
def fleet() -> Generator[Fleet, None, None]:
    assert os.geteuid() == 0, "network namespaces and systemd-nspawn need root (CI runs as root)"
    for tool in ("systemd-nspawn", "debootstrap", "nsenter", "ip"):
        assert shutil.which(tool), f"{tool} is missing: .ci/system-deps installs it"
    t0 = time.monotonic()
    sweep_leftovers()
    root = container_root()
    t_root = time.monotonic() - t0
    staging = Path(tempfile.mkdtemp(prefix="sidecar-fleet-", dir="/tmp"))
    staging.chmod(0o755)
    net = Network()
    pg = redis_server = sink = None
    containers: list[Container] = []
    try:
        net.up()
        db_ns, db_address = net.add("db", 2)
        pg = PostgresServer(netns=db_ns, host=db_address, trust=net.cidr).start()
        pg.create_database("sidecar")
        redis_server = RedisServer(netns=db_ns, host=db_address).start()
        sink = SmtpSink(host=net.host).start()
        sink.rcpt_replies[HARD] = f"550 5.1.1 <{HARD}>: user unknown"
        f = Fleet(net, staging, pg, redis_server, sink)
        f.times["root"] = t_root
        t0 = time.monotonic()
        (staging / "wheels").mkdir(mode=0o755)  # filled while the relays boot
        for i, name in enumerate(("relay1", "relay2")):
            netns, address = net.add(f"r{i + 1}", 11 + i)
            # the wheelhouse already where the role keeps it on a target: its copy task (tested by
            # postfix/test_ansible_role.py) copies wheels one by one, 168 s of a 479 s first converge
            wheels = f"--bind-ro={staging / 'wheels'}:/opt/postfix-sidecar-wheelhouse"
            binds = [f"--bind-ro={REPO}", f"--bind-ro={staging}", wheels]
            if not VENV_BIN.parent.is_relative_to(REPO):
                binds.append(f"--bind-ro={VENV_BIN.parent}")
            c = Container(root, netns, staging / f"{name}.console", netns, tuple(binds))
            c.start()
            containers.append(c)
            f.relays[name] = (c, address)
        build_wheelhouse(staging / "wheels", extras=("postgresql", "redis"))  # while they boot
        for c in containers:
            c.wait_booted()
        f.times["boot"] = time.monotonic() - t0
        yield f
    finally:
        for c in containers:  # shown when the test fails
            print(f"--- {c.name}: journal ---\n{c.journal(UNIT, 30)}{c.journal('postfix@-.service', 30)}")
        errors: list[BaseException] = []
        steps: list[Callable[[], None]] = [c.poweroff for c in containers]
        steps += [s for s in (pg.remove if pg else None, redis_server.remove if redis_server else None) if s]
        steps += [sink.stop] if sink else []
        steps += [net.down]
        for step in steps:
            try:
                step()
            except BaseException as exc:  # every step runs; the first error is raised
                errors.append(exc)
        shutil.rmtree(staging, ignore_errors=True)
        if errors:
            raise errors[0]


def check_unit_lifecycle(c: Container) -> None:
    """The shipped unit under systemd: readiness, user, directories, SIGKILL, bad reload, restart."""
    journal = lambda: c.journal(UNIT)  # noqa: E731

    def ask() -> str:
        return c.run("/usr/bin/python3", "-c", ASK_POLICY).stdout.strip()

    props = c.show(UNIT, "Type", "ActiveState", "SubState", "MainPID", "NRestarts", "User", "UnitFileState")
    assert props["Type"] == "notify" and props["User"] == "sidecar", props
    assert (props["ActiveState"], props["SubState"], props["UnitFileState"]) == ("active", "running", "enabled"), props
    assert ask() == "action=DUNNO"
    owner = c.run("stat", "-c", "%U %a", "/var/lib/postfix-sidecar", "/run/postfix-sidecar/ingest").stdout.split("\n")
    assert owner[:2] == ["sidecar 750", "sidecar 750"], owner

    # SIGKILL: Restart=on-failure brings it back (RestartSec=2s), ready again
    pid, restarts = props["MainPID"], int(props["NRestarts"])
    c.run("sh", "-c", f"kill -KILL {pid}")  # the shell's kill: minbase has no procps
    wait(
        "the unit to come back after SIGKILL",
        lambda: (
            (p := c.show(UNIT, "ActiveState", "MainPID", "NRestarts"))["ActiveState"] == "active"
            and p["MainPID"] not in ("0", pid)
            and int(p["NRestarts"]) == restarts + 1
        ),
        30,
        journal,
    )
    assert ask() == "action=DUNNO"

    # reload with a bad file: still running, one error line; the good file back, then a restart
    good = c.run("cat", CONFIG_FILE).stdout
    c.run("sh", "-c", f"cat > {CONFIG_FILE}", stdin="[server]\nno_such_key = 1\n")  # in place: owner and mode kept
    pid = c.show(UNIT, "MainPID")["MainPID"]
    c.run("systemctl", "reload", UNIT)
    assert c.show(UNIT, "ActiveState", "MainPID") == {"ActiveState": "active", "MainPID": pid}
    wait("the reload error in the journal", lambda: "configuration error, still running" in journal(), 10, journal)
    c.run("sh", "-c", f"cat > {CONFIG_FILE}", stdin=good)
    c.run("systemctl", "restart", UNIT, timeout=150)  # returns once READY=1 arrived
    assert c.show(UNIT, "MainPID")["MainPID"] != pid
    assert ask() == "action=DUNNO"  # at once, no retry


def test_role_on_a_fleet_under_systemd(fleet: Fleet) -> None:
    f = fleet
    t_start = time.monotonic()
    (f.staging / "vars.json").write_text(json.dumps(f.role_vars()))

    t0 = time.monotonic()
    changed = f.converge()
    f.times["converge 1"] = time.monotonic() - t0
    print(f"slowest tasks of the first converge on relay 1: {f.slowest['relay1']}")
    assert all(n > 0 for n in changed.values()), changed
    t0 = time.monotonic()
    changed = f.converge()
    f.times["converge 2"] = time.monotonic() - t0
    assert changed == {"relay1": 0, "relay2": 0}, changed

    for name, (c, _) in f.relays.items():
        assert c.run("systemctl", "is-active", UNIT, "postfix.service").stdout.split() == ["active", "active"], name

    t0 = time.monotonic()
    relay1 = f.relays["relay1"][0]
    check_unit_lifecycle(relay1)
    f.times["unit checks"] = time.monotonic() - t0
    t0 = time.monotonic()

    # a message through each relay reaches the sink; the recipients were counted in the shared Redis
    for name in f.relays:
        assert f.smtp(name, [f"good-{name}@example.test"]) == {f"good-{name}@example.test": (250, "2.1.5 Ok")}
    for name in f.relays:
        [msg] = f.sink.wait_for_message(f"good-{name}@example.test", timeout=30)
        assert msg.mail_from == SENDER and f"via {name}".encode() in msg.data
    client = redis.Redis(host=f.redis.host, port=f.redis.port, socket_timeout=5)
    assert client.dbsize() > 0, "no rate-limit counter in the shared Redis"

    # a bounce on relay 1: the sink refuses HARD, relay 1's DSN goes through pipe(8) into ingest
    verp = make_verp_sender(VERP_KEY.encode(), HARD, SENDER)
    assert f.smtp("relay1", [HARD], sender=verp)[HARD][0] == 250
    f.sink.wait_for_rcpt_attempt(HARD, timeout=30)
    dsn = f"host={f.pg.host} port={f.pg.port} user=postgres dbname=sidecar"
    with psycopg.connect(dsn, autocommit=True) as conn:
        query = "SELECT count(*) FROM suppressions WHERE address = %s AND active"
        wait(
            "the bounce's suppression in PostgreSQL",
            lambda: conn.execute(query, (HARD,)).fetchone() == (1,),
            30,
            lambda: relay1.journal("postfix@-.service") + relay1.journal(UNIT),
        )
    stored = time.monotonic()
    # ... and relay 2 refuses it at RCPT within 2 s
    replies: list[tuple[int, str]] = []
    while time.monotonic() - stored < 5:
        replies.append(f.smtp("relay2", [HARD], data=False)[HARD])
        if replies[-1][0] == 550:
            break
    refused = time.monotonic() - stored
    code, text = replies[-1]
    assert code == 550 and "recipient suppressed" in text, replies
    assert refused < 2.0, f"relay 2 refused {HARD} {refused:.2f}s after the suppression was stored"
    assert f.sink.rcpt_attempts_for(HARD) == [f"550 5.1.1 <{HARD}>: user unknown"]  # relay 2 never sent it
    f.times["mail checks"] = time.monotonic() - t0

    relay1.run("systemctl", "stop", UNIT)
    props = relay1.show(UNIT, "ActiveState", "Result")
    assert props == {"ActiveState": "inactive", "Result": "success"}, (props, relay1.journal(UNIT))

    f.times["test body"] = time.monotonic() - t_start
    figures = ", ".join(f"{k} {v:.1f}s" for k, v in f.times.items())
    print(f"fleet: {figures}; relay 2 refused the bounced address {refused:.2f}s after it was stored")
    print(f"slowest tasks of the second converge on relay 1: {f.slowest['relay1']}")
