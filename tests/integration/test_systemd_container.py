"""The shipped unit under a real systemd: a ``systemd-nspawn --boot`` container.

The host has no systemd; a container booted from a cached Debian 12 root does. The container
gets only a loopback network (``--private-network``), a throwaway writable layer over the
cached root (``--volatile=overlay``: the cache stays clean) and this checkout read-only at the
same path, so its virtualenv runs inside as it is (same /usr/bin/python3). The unit is
contrib/systemd/postfix-sidecar.service exactly as shipped, with a drop-in for the executable,
as the Ansible role installs it. Checked:

- ``systemctl start`` returns only after READY=1, and the policy port answers at once;
- the sandboxing (PrivateUsers, SystemCallFilter, MemoryDenyWriteExecute ...) lets serve run;
- a SIGKILL brings it back (Restart=on-failure), ``systemctl restart`` too;
- ``systemctl reload`` with a bad file keeps the service running, one error line in the journal.

The root is built once with debootstrap (about a minute) under ``$SIDECAR_NSPAWN_CACHE``
(default /var/cache/postfix-sidecar-tests) and reused. Needs root, systemd-container and
debootstrap (.ci/system-deps installs them).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Generator
from pathlib import Path

import pytest

from tests.harness.system import pid_alive

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent  # this test's virtualenv: run inside the container as it is
CACHE = Path(os.environ.get("SIDECAR_NSPAWN_CACHE", "/var/cache/postfix-sidecar-tests"))
BASE = CACHE / "bookworm"
PACKAGES = "systemd-sysv,dbus,python3"
UNIT = "postfix-sidecar.service"
POLICY_PORT = 10031  # inside the container's own network namespace

CONFIG = """\
[server]
policy = ["tcp:10031:interface=127.0.0.1"]
http = "tcp:9731:interface=127.0.0.1"

[database]
url = "sqlite:////var/lib/postfix-sidecar/sidecar.db"

[ingest]
socket = "/run/postfix-sidecar/ingest/ingest.sock"
socket_group = "sidecar"
"""

ASK_POLICY = "\n".join(
    [
        "import socket",
        f's = socket.create_connection(("127.0.0.1", {POLICY_PORT}), timeout=5)',
        r's.sendall(b"request=smtpd_access_policy\nprotocol_state=RCPT\nsender=a@example.com\n"',
        r'          b"recipient=b@example.net\nclient_address=127.0.0.1\n\n")',
        "print(s.recv(1024).decode().strip())",
    ]
)


def base_root() -> Path:
    """The cached Debian 12 root, made with debootstrap the first time (under a lock)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (BASE / "usr" / "lib" / "systemd" / "systemd").exists():
            return BASE
        partial = CACHE / "bookworm.partial"
        shutil.rmtree(partial, ignore_errors=True)
        r = subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={PACKAGES}", "bookworm", str(partial)],
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        partial.rename(BASE)
    return BASE


class Container:
    def __init__(self, root: Path, staging: Path) -> None:
        self.root, self.staging = root, staging
        self.log = staging / "console.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.init_pid = 0

    def boot(self, timeout: float = 90) -> float:
        s = self.staging
        argv = [
            "systemd-nspawn",
            "--quiet",
            "--register=no",
            "--keep-unit",
            "--boot",
            "--volatile=overlay",
            "--private-network",
            "--console=pipe",
            "--machine=sidecar-unit-test",
            f"--directory={self.root}",
            f"--bind-ro={REPO}",
            *([] if VENV_BIN.parent.is_relative_to(REPO) else [f"--bind-ro={VENV_BIN.parent}"]),
            f"--bind-ro={REPO / 'contrib' / 'systemd' / UNIT}:/etc/systemd/system/{UNIT}",
            f"--bind-ro={s / 'dropin'}:/etc/systemd/system/{UNIT}.d",
            f"--bind-ro={s / 'etc'}:/etc/postfix-sidecar",
        ]
        t0 = time.monotonic()
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        while time.monotonic() - t0 < timeout:
            assert self.proc.poll() is None, f"systemd-nspawn exited {self.proc.returncode}:\n{self.console()}"
            self.init_pid = self.init_pid or self._find_init()
            if self.init_pid:
                state = self.run("systemctl", "is-system-running", check=False).stdout.strip()
                if state in ("running", "degraded"):
                    return time.monotonic() - t0
            time.sleep(0.5)
        raise AssertionError(f"the container did not boot in {timeout}s:\n{self.console()}")

    def _find_init(self) -> int:
        """The container's PID 1 (systemd), a descendant of systemd-nspawn."""
        assert self.proc is not None
        for status in Path("/proc").glob("[0-9]*/status"):
            with contextlib.suppress(OSError):
                fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
                nspid = fields.get("NSpid", "").split()
                if len(nspid) > 1 and nspid[-1] == "1" and self._descends(int(status.parent.name)):
                    return int(status.parent.name)
        return 0

    def _descends(self, pid: int) -> bool:
        assert self.proc is not None
        for _ in range(10):
            with contextlib.suppress(OSError, ValueError):
                pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
                if pid == self.proc.pid:
                    return True
                continue
            return False
        return False

    def run(self, *argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        cmd = ["nsenter", "-t", str(self.init_pid), "-m", "-u", "-i", "-n", "-p", "--", *argv]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if check:
            assert r.returncode == 0, f"{' '.join(argv)}: exit {r.returncode}\n{r.stdout}{r.stderr}\n{self.journal()}"
        return r

    def show(self, *props: str) -> dict[str, str]:
        out = self.run("systemctl", "show", UNIT, *(f"--property={p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self) -> str:
        if not self.init_pid:
            return ""
        r = subprocess.run(
            ["nsenter", "-t", str(self.init_pid), "-m", "-u", "-i", "-n", "-p", "--"]
            + ["journalctl", "-u", UNIT, "--no-pager", "-n", "40", "-o", "cat"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        return r.stdout + r.stderr

    def console(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def poweroff(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)  # systemd-nspawn: power the container off
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        assert not pid_alive(self.proc.pid)


@pytest.fixture
def container(tmp_path: Path) -> Generator[Container, None, None]:
    assert os.geteuid() == 0, "systemd-nspawn needs root (CI runs as root)"
    for tool in ("systemd-nspawn", "debootstrap", "nsenter"):
        assert shutil.which(tool), f"{tool} is missing: .ci/system-deps installs it"
    root = base_root()
    staging = tmp_path / "staging"
    (staging / "etc").mkdir(parents=True)
    (staging / "dropin").mkdir()
    for d in (staging, staging / "etc", staging / "dropin"):
        d.chmod(0o755)
    (staging / "etc" / "sidecar.toml").write_text(CONFIG)
    (staging / "etc" / "sidecar.toml").chmod(0o644)
    dropin = (
        f"[Service]\nExecStart=\nExecStart={VENV_BIN / 'sidecar'} serve --config /etc/postfix-sidecar/sidecar.toml\n"
    )
    if str(REPO).startswith(("/root", "/home")):
        dropin += "ProtectHome=no\n"  # the checkout (and its virtualenv) is under a home directory
    (staging / "dropin" / "test.conf").write_text(dropin)
    c = Container(root, staging)
    try:
        yield c
    finally:
        c.poweroff()


def _wait(what: str, predicate, timeout: float, c: Container) -> None:  # type: ignore[no-untyped-def]
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if predicate():
            return
        time.sleep(0.25)
    raise AssertionError(f"{what} within {timeout}s\n{c.journal()}")


def test_unit_under_real_systemd(container: Container) -> None:
    c = container
    booted = c.boot()
    c.run("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "sidecar")
    c.run("systemctl", "daemon-reload")

    t0 = time.monotonic()
    c.run("systemctl", "start", UNIT, timeout=150)  # returns once READY=1 arrived
    started = time.monotonic() - t0
    python = str(VENV_BIN / "python")
    assert c.run(python, "-c", ASK_POLICY).stdout.strip() == "action=DUNNO"  # at once, no retry
    props = c.show("Type", "ActiveState", "SubState", "MainPID", "NRestarts", "User")
    assert props["Type"] == "notify" and props["User"] == "sidecar", props
    assert (props["ActiveState"], props["SubState"]) == ("active", "running"), props
    pid = props["MainPID"]
    owner = c.run("stat", "-c", "%U %a", "/var/lib/postfix-sidecar", "/run/postfix-sidecar/ingest").stdout.split("\n")
    assert owner[:2] == ["sidecar 750", "sidecar 750"], owner

    # SIGKILL: Restart=on-failure brings it back (RestartSec=2s), ready again
    c.run("sh", "-c", f"kill -KILL {pid}")  # the shell's kill: minbase has no procps
    _wait(
        "the unit to come back after SIGKILL",
        lambda: (
            (p := c.show("ActiveState", "MainPID", "NRestarts"))["ActiveState"] == "active"
            and p["MainPID"] not in ("0", pid)
            and p["NRestarts"] == "1"
        ),
        30,
        c,
    )
    assert c.run(python, "-c", ASK_POLICY).stdout.strip() == "action=DUNNO"

    # reload with a bad file: still running, one error line; then a restart
    config = c.staging / "etc" / "sidecar.toml"
    config.write_text("[server]\nno_such_key = 1\n")  # in place: the bind mount shows the same inode
    pid = c.show("MainPID")["MainPID"]
    c.run("systemctl", "reload", UNIT)
    assert c.show("ActiveState", "MainPID") == {"ActiveState": "active", "MainPID": pid}
    _wait("the reload error in the journal", lambda: "configuration error, still running" in c.journal(), 10, c)
    config.write_text(CONFIG)
    c.run("systemctl", "restart", UNIT, timeout=150)
    assert c.show("MainPID")["MainPID"] != pid
    assert c.run(python, "-c", ASK_POLICY).stdout.strip() == "action=DUNNO"

    c.run("systemctl", "stop", UNIT)
    props = c.show("ActiveState", "Result")
    assert props == {"ActiveState": "inactive", "Result": "success"}, (props, c.journal())
    print(f"container booted in {booted:.1f}s; systemctl start returned in {started:.1f}s")
