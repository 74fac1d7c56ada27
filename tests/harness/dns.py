"""A private authoritative DNS server (knotd) on a free loopback port, serving tests/data/dns/.

The zones are copied into the server's own directory, so a test may edit one and ``reload()``.
knotd is started and stopped by its PID; `.ci/system-deps` installs the ``knot`` package.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import dns.message
import dns.query
import dns.rdatatype

from tests.harness.system import free_port, pid_alive

ZONES = Path(__file__).resolve().parents[1] / "data" / "dns"


def _knotd() -> str:
    for path in (shutil.which("knotd"), "/usr/sbin/knotd"):
        if path and Path(path).exists():
            return path
    raise RuntimeError("knotd is not installed: apt-get install knot (.ci/system-deps does this)")


class KnotServer:
    """knotd serving every ``*.zone`` of ``zones`` on 127.0.0.1:``port`` (UDP and TCP)."""

    def __init__(self, zones: Path = ZONES) -> None:
        self.knotd = _knotd()
        self.dir = Path(tempfile.mkdtemp(prefix="sidecar-dns-"))
        self.zone_dir = self.dir / "zones"
        shutil.copytree(zones, self.zone_dir)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def resolver(self) -> str:
        """The ``IP:PORT`` to give ``--resolver`` and ``domain_health.resolvers``."""
        return f"127.0.0.1:{self.port}"

    def _config(self) -> str:
        zones = sorted(p.name[: -len(".zone")] for p in self.zone_dir.glob("*.zone"))
        return (
            f'server:\n    rundir: "{self.dir}"\n    listen: 127.0.0.1@{self.port}\n'
            f'database:\n    storage: "{self.dir}"\n'
            "log:\n  - target: stderr\n    any: info\n"
            f'template:\n  - id: default\n    storage: "{self.zone_dir}"\n    file: "%s.zone"\n'
            "    zonefile-sync: -1\n    zonefile-load: whole\n    journal-content: none\n"
            "zone:\n" + "".join(f"  - domain: {z}\n" for z in zones)
        )

    def start(self, timeout: float = 10.0) -> KnotServer:
        conf = self.dir / "knot.conf"
        conf.write_text(self._config())
        log = (self.dir / "knotd.log").open("wb")
        self.proc = subprocess.Popen([self.knotd, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        t0 = time.monotonic()
        while self.serial("example.test") is None:
            if self.proc.poll() is not None or time.monotonic() - t0 > timeout:
                self.stop()
                tail = (self.dir / "knotd.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"knotd did not answer on 127.0.0.1:{self.port}: {tail}")
            time.sleep(0.02)
        return self

    def serial(self, zone: str) -> int | None:
        """The SOA serial knotd serves for ``zone`` (None while it does not answer)."""
        q = dns.message.make_query(zone, dns.rdatatype.SOA)
        try:
            r = dns.query.udp(q, "127.0.0.1", port=self.port, timeout=0.2)
        except (OSError, dns.exception.Timeout):
            return None
        for rrset in r.answer:
            for rd in rrset:
                return int(rd.serial)  # type: ignore[attr-defined]
        return None

    def edit(self, zone: str, old: str, new: str) -> None:
        """Replace ``old`` by ``new`` in ``zone``'s file and bump its serial; call ``reload()`` next."""
        path = self.zone_dir / f"{zone}.zone"
        text = path.read_text()
        assert old in text, f"{old!r} not in {path}"
        text = text.replace(old, new)
        m = re.search(r"(IN\s+SOA\s+\S+\s+\S+\s+)(\d+)", text)
        assert m is not None
        text = text[: m.start(2)] + str(int(m.group(2)) + 1) + text[m.end(2) :]
        path.write_text(text)

    def reload(self, zone: str = "example.test", timeout: float = 10.0) -> None:
        """SIGHUP: knotd re-reads its zone files; waits until ``zone``'s new serial is served."""
        assert self.proc is not None
        text = (self.zone_dir / f"{zone}.zone").read_text()
        m = re.search(r"IN\s+SOA\s+\S+\s+\S+\s+(\d+)", text)
        assert m is not None
        want = int(m.group(1))
        self.proc.send_signal(signal.SIGHUP)
        t0 = time.monotonic()
        while self.serial(zone) != want:
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"knotd did not load serial {want} of {zone}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        assert not pid_alive(self.proc.pid)
        self.proc = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
