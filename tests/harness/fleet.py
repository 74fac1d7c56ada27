"""Hosts under a real systemd on one machine: ``systemd-nspawn --boot`` containers, each in a
network namespace of its own on a private bridge (no default route: nothing leaves the bridge).

- ``container_root()``: the cached Debian 12 root (.ci/nspawn-root builds it once, under a lock);
- ``Network``: a bridge with the host at .1 and a namespace per host (veth pairs), removed at
  teardown; ``sweep_leftovers()`` removes what a killed earlier run left (names carry its PID);
- ``Container``: boot a root in a namespace (a throwaway overlay: the cache stays clean), run
  commands inside (nsenter), read a unit's properties and journal, power it off by PID.

Needs root, iproute2, systemd-container and debootstrap (.ci/system-deps installs them).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from pathlib import Path

from tests.harness.system import pid_alive

REPO = Path(__file__).resolve().parents[2]
PREFIX = "scf"  # names: scf<PID>br (bridge), scf<PID><host> (veth, namespace, machine)
_OURS = re.compile(rf"\b{PREFIX}(\d+)")


def container_root() -> Path:
    """The cached root with systemd, Postfix and python3-venv; built the first time (~70 s)."""
    r = subprocess.run(["bash", str(REPO / ".ci" / "nspawn-root")], capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, f".ci/nspawn-root failed:\n{r.stdout}{r.stderr}"
    return Path(r.stdout.strip().splitlines()[-1])


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 or not check, f"ip {' '.join(args)}: {r.stderr.strip()}"
    return r


def _stop_namespace(netns: str) -> None:
    """Stop what still runs in one of our namespaces (a killed run's servers), then delete it."""
    pids = _ip("netns", "pids", netns, check=False).stdout.split()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), sig)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(pid_alive(int(p)) for p in pids):
            time.sleep(0.1)
    _ip("netns", "del", netns, check=False)


def sweep_leftovers() -> None:
    """Remove the containers, namespaces and bridges of earlier runs whose process is gone."""

    def dead(name: str) -> bool:
        m = _OURS.match(name)
        return m is not None and not pid_alive(int(m.group(1)))

    for status in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            argv = status.read_bytes().split(b"\0")
            if argv[0].endswith(b"systemd-nspawn"):
                machine = next((a[10:].decode() for a in argv if a.startswith(b"--machine=")), "")
                if dead(machine):
                    os.kill(int(status.parent.name), signal.SIGKILL)
    for line in _ip("netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if dead(name):
            _stop_namespace(name)
    for line in _ip("-o", "link", "show", check=False).stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0] if line.count(":") >= 2 else ""
        if dead(name):
            _ip("link", "del", name, check=False)


class Network:
    """A bridge at 10.213.N.1/24 on the host, and namespaces attached to it by veth pairs."""

    def __init__(self) -> None:
        self.tag = f"{PREFIX}{os.getpid()}"
        self.bridge = f"{self.tag}br"
        self.subnet = f"10.213.{os.getpid() % 200 + 20}"
        self.host = f"{self.subnet}.1"
        self.namespaces: list[str] = []

    @property
    def cidr(self) -> str:
        return f"{self.subnet}.0/24"

    def up(self) -> Network:
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.host}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        return self

    def add(self, name: str, octet: int) -> tuple[str, str]:
        """A namespace for host ``name`` at .``octet``; returns (namespace, address)."""
        netns, veth = f"{self.tag}{name}", f"{self.tag}{name}"
        _ip("netns", "add", netns)
        self.namespaces.append(netns)
        _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
        _ip("link", "set", veth, "master", self.bridge, "up")
        address = f"{self.subnet}.{octet}"
        _ip("-n", netns, "addr", "add", f"{address}/24", "dev", "eth0")
        _ip("-n", netns, "link", "set", "eth0", "up")
        _ip("-n", netns, "link", "set", "lo", "up")
        return netns, address

    def down(self) -> None:
        for netns in self.namespaces:
            _stop_namespace(netns)
        _ip("link", "del", self.bridge, check=False)
        left = [n for n in self.namespaces if Path(f"/run/netns/{n}").exists()]
        assert not left, f"namespaces left behind: {left}"


class Container:
    """One booted container: ``systemd-nspawn --boot`` over a throwaway overlay of ``root``."""

    def __init__(
        self, root: Path, name: str, log: Path, netns: str | None = None, options: tuple[str, ...] = ()
    ) -> None:
        """``options``: more systemd-nspawn options, e.g. ``--bind-ro=/srv``."""
        self.root, self.name, self.log, self.netns, self.options = root, name, log, netns, options
        self.proc: subprocess.Popen[bytes] | None = None
        self.init_pid = 0

    def start(self) -> None:
        network = f"--network-namespace-path=/run/netns/{self.netns}" if self.netns else "--private-network"
        argv = [
            "systemd-nspawn",
            "--quiet",
            "--register=no",
            "--keep-unit",
            "--boot",
            "--volatile=overlay",
            network,
            "--console=pipe",
            f"--machine={self.name}",
            f"--directory={self.root}",
            *self.options,
        ]
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)

    def wait_booted(self, timeout: float = 120) -> None:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            assert self.proc is not None
            assert self.proc.poll() is None, f"systemd-nspawn exited {self.proc.returncode}:\n{self.console()}"
            self.init_pid = self.init_pid or self._find_init()
            if self.init_pid:
                state = self.run("systemctl", "is-system-running", check=False).stdout.strip()
                if state in ("running", "degraded"):
                    return
            time.sleep(0.5)
        raise AssertionError(f"{self.name} did not boot in {timeout}s:\n{self.console()}")

    def _find_init(self) -> int:
        """The container's PID 1 (systemd), a descendant of systemd-nspawn."""
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

    def nsenter(self) -> list[str]:
        return ["nsenter", "-t", str(self.init_pid), "-m", "-u", "-i", "-n", "-p", "--"]

    def run(
        self, *argv: str, check: bool = True, timeout: float = 60, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([*self.nsenter(), *argv], capture_output=True, text=True, timeout=timeout, input=stdin)
        if check:
            assert r.returncode == 0, f"{self.name}: {' '.join(argv)}: exit {r.returncode}\n{r.stdout}{r.stderr}"
        return r

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.run("systemctl", "show", unit, *(f"--property={p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, unit: str, lines: int = 40) -> str:
        if not self.init_pid:
            return ""
        r = self.run("journalctl", "-u", unit, "--no-pager", "-n", str(lines), "-o", "cat", check=False)
        return r.stdout + r.stderr

    def console(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""

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
