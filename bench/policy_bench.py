"""Policy-server benchmark: the sidecar against two bare Twisted servers, same run.

Starts each server as a subprocess on a loopback port, then drives them in turn
with bench/policy_load.py (same duration each, interleaved over --rounds rounds so
that drift on a shared machine hits every server alike) and prints one table:
the best round's req/s and latency percentiles (other load on a shared machine only
slows a round down; the median is shown too), the ratio to the bare LineReceiver, and for
the sidecar its RSS and start-up time (spawn until the policy port answers a
request, and until it is ready: /healthz 200 and a suppressed recipient refused).
CPU used by anything but the server and the generator during a round is shown as
"other CPU": a round with much of it was disturbed.

Sidecar scenario (defaults): 1,000,000 suppressed addresses seeded with
`sidecar suppressions import` before timing, 100,000 active rate-limit keys (one
per sender, all touched by an untimed warm-up pass), 50 connections.

    .venv/bin/python bench/policy_bench.py                     # full scenario
    .venv/bin/python bench/policy_bench.py --suppressions 10000 --keys 1000 --duration 5
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "bench"), str(ROOT)]
from policy_load import (  # noqa: E402 - a sibling bench module
    DUNNO_REPLY,
    RCPT_ATTRIBUTES,
    clean_address,
    sender_address,
    suppressed_address,
)

from tests.harness.system import free_port  # noqa: E402 - the harness, bench/README.md

BENCH = ROOT / "bench"
VENV_BIN = ROOT / ".venv" / "bin"
PY = str(VENV_BIN / "python") if (VENV_BIN / "python").exists() else sys.executable
SIDECAR = str(VENV_BIN / "sidecar")

# One key per sender. Each request costs per/rate = 864 s of GCRA time, so a key touched
# once by the warm-up stays in memory for the whole run (with rate = 1000000 per "1m" a
# key's state lapses after 60 us and housekeeping drops it within 30 s); the burst is so
# large that nothing is ever refused.
CONFIG_TOML = """\
[ratelimit]
[[ratelimit.rules]]
name = "per-sender"
key = ["sender"]
count = "recipients"
limits = [{ rate = 100, per = "1d", burst = 100000000 }]

[ingest]
socket = ""
"""


def probe_request(recipient: str) -> bytes:
    attrs = dict(RCPT_ATTRIBUTES)
    attrs["sender"] = sender_address(0)
    attrs["recipient"] = recipient
    return "".join(f"{k}={v}\n" for k, v in attrs.items()).encode() + b"\n"


def answers(port: int, timeout: float = 2.0, recipient: str = "") -> bytes | None:
    """One request on a fresh connection; the reply, or None if the port is not ready."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(probe_request(recipient or clean_address(0)))
            buf = b""
            while not buf.endswith(b"\n\n"):
                chunk = s.recv(4096)
                if not chunk:
                    return None
                buf += chunk
            return buf
    except OSError:
        return None


class Server:
    """A server subprocess we started; stopped by its PID only."""

    def __init__(self, name: str, argv: list[str], port: int, logdir: Path) -> None:
        self.name, self.argv, self.port = name, argv, port
        self.log_path = logdir / f"{name}.log"
        self.proc: subprocess.Popen | None = None
        self.startup_s: float | None = None
        self.t0 = 0.0

    def start(self, timeout: float) -> None:
        log = open(self.log_path, "wb")  # noqa: SIM115 - closed with the process
        t0 = self.t0 = time.monotonic()
        self.proc = subprocess.Popen(
            self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT, start_new_session=True
        )
        log.close()
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            reply = answers(self.port, timeout=max(1.0, timeout - (time.monotonic() - t0)))
            if reply is not None:
                self.startup_s = time.monotonic() - t0
                if reply != DUNNO_REPLY:
                    print(f"  warning: {self.name} answered the probe with {reply!r}")
                return
            time.sleep(0.02)
        raise RuntimeError(f"{self.name} did not answer within {timeout:.0f} s:\n{self.log_tail()}")

    def rss_kb(self) -> dict[str, int]:
        out = {}
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    out[line.split(":")[0]] = int(line.split()[1])
        return out

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        p = self.proc
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=15)


def cpu_ticks(pid: int | None = None) -> int:
    """Process-time clock ticks (user + system): of the whole machine, or of one process.

    Interrupt and softirq time is left out: loopback TCP puts much of its own cost there,
    attributed to no process, so it would show as "other" load.
    """
    if pid is None:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:4]]
        return sum(v)  # user, nice, system
    with open(f"/proc/{pid}/stat") as f:
        v = f.read().rsplit(")", 1)[1].split()
    return int(v[11]) + int(v[12])


def wait_quiet(threshold: float, max_wait: float) -> float:
    """Wait (up to max_wait s) until the machine is idle; returns the last busy fraction."""
    hz, ncpu = os.sysconf("SC_CLK_TCK"), os.cpu_count() or 1
    t_end = time.monotonic() + max_wait
    while True:
        a = cpu_ticks()
        time.sleep(0.5)
        busy = (cpu_ticks() - a) / hz / 0.5 / ncpu
        if busy <= threshold or time.monotonic() >= t_end:
            return busy
        time.sleep(0.5)


def run_load(
    port: int, args: argparse.Namespace, *, expect: str, server_pid: int | None = None, warmup_only: bool = False
) -> dict:
    argv = [
        PY,
        str(BENCH / "policy_load.py"),
        "--port",
        str(port),
        "--json",
        "--duration",
        str(args.duration),
        "--connections",
        str(args.connections),
        "--procs",
        str(args.procs),
        "--senders",
        str(args.keys),
        "--suppressed",
        str(args.suppressions),
        "--suppressed-fraction",
        str(args.suppressed_fraction),
        "--expect",
        expect,
    ]
    if warmup_only:
        argv.append("--warmup-only")
    elif args.rate:
        argv += ["--rate", str(args.rate)]
    limit = args.duration + 600 + (args.keys / 1000 if warmup_only else 0)
    hz = os.sysconf("SC_CLK_TCK")
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    sys0, srv0, t0 = cpu_ticks(), cpu_ticks(server_pid) if server_pid else 0, time.monotonic()
    out = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=limit, cwd=ROOT)
    wall = time.monotonic() - t0
    srv_ticks = cpu_ticks(server_pid) - srv0 if server_pid else 0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    gen_s = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    lines = out.stdout.strip().splitlines()
    if not lines:
        raise RuntimeError(f"load generator failed ({out.returncode}):\n{out.stderr[-3000:]}")
    res = json.loads(lines[-1])
    other_s = (cpu_ticks() - sys0 - srv_ticks) / hz - gen_s
    res.update(
        server_cpu=round(srv_ticks / hz / wall, 2),
        generator_cpu=round(gen_s / wall, 2),
        other_cpu=round(max(0.0, other_s) / wall, 2),
    )
    return res


def source_digest() -> str:
    """Fingerprint of the code that writes the database, so a cached DB is never stale."""
    h = hashlib.sha256()
    for sub in ("store", "suppression"):
        for p in sorted((ROOT / "sidecar" / sub).rglob("*.py")):
            h.update(p.read_bytes())
    return h.hexdigest()[:12]


def suppression_csv(cache: Path, n: int) -> Path:
    path = cache / f"suppressions-{n}.csv"
    if path.exists():
        return path
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(("address", "tenant", "reason", "expires_at"))
        for i in range(n):
            w.writerow((suppressed_address(i), "", "hard_bounce", ""))
    tmp.rename(path)
    return path


def seeded_db(args: argparse.Namespace, cache: Path, workdir: Path, n: int) -> tuple[Path, float | None]:
    """A SQLite DB with n suppressions in workdir; import time, or None when cached."""
    cached = cache / f"bench-{n}-{source_digest()}.db"
    db = workdir / "bench.db"
    import_s = None
    if not cached.exists():
        csv_path = suppression_csv(cache, n)
        tmp = cache / f"import-{os.getpid()}.db"
        tmp.unlink(missing_ok=True)
        t0 = time.monotonic()
        res = subprocess.run(
            [args.sidecar, "suppressions", "import", str(csv_path), "--db", f"sqlite:///{tmp}"],
            check=False,
            capture_output=True,
            text=True,
            timeout=1800,
            cwd=ROOT,
        )
        import_s = time.monotonic() - t0
        if res.returncode != 0:
            tmp.unlink(missing_ok=True)
            raise RuntimeError(
                f"suppressions import failed ({res.returncode}):\n{res.stdout[-2000:]}{res.stderr[-3000:]}"
            )
        tmp.rename(cached)
        for old in cache.glob(f"bench-{n}-*.db"):
            if old != cached:
                old.unlink(missing_ok=True)
    shutil.copyfile(cached, db)
    return db, import_s


def wait_ready(srv: Server, http_port: int, n_suppressed: int, timeout: float) -> dict:
    """Seconds from spawn until /healthz is 200 and until a suppressed recipient gets a 550."""
    out: dict = {"healthz_s": None, "suppressed_550_s": None}
    probe = suppressed_address(n_suppressed - 1) if n_suppressed else None
    if probe is None:
        out["suppressed_550_s"] = 0.0
    while time.monotonic() - srv.t0 < timeout and None in out.values():
        if out["healthz_s"] is None:
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"http://127.0.0.1:{http_port}/healthz", timeout=2) as r,
            ):
                if r.status == 200:
                    out["healthz_s"] = round(time.monotonic() - srv.t0, 2)
        if out["suppressed_550_s"] is None:
            reply = answers(srv.port, recipient=probe or "")
            if reply is not None and reply.startswith(b"action=550"):
                out["suppressed_550_s"] = round(time.monotonic() - srv.t0, 2)
        time.sleep(0.02)
    return out


def metrics(http_port: int, names: tuple[str, ...]) -> dict[str, float]:
    """Sum of the samples of each named metric on /metrics (missing: absent)."""
    out: dict[str, float] = {}
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return out
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        name = line.split("{")[0].split(" ")[0]
        if name in names:
            out[name] = out.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def start_sidecar(args: argparse.Namespace, workdir: Path, cache: Path) -> tuple[Server, dict]:
    print(f"  seeding {args.suppressions:,} suppressions ...", flush=True)
    db, import_s = seeded_db(args, cache, workdir, args.suppressions)
    cfg = workdir / "bench.toml"
    cfg.write_text(Path(args.config).read_text() if args.config else CONFIG_TOML)
    port, http_port = free_port(), free_port()
    argv = [
        args.sidecar,
        "serve",
        "--config",
        str(cfg),
        "--policy",
        f"tcp:{port}:interface=127.0.0.1",
        "--http",
        f"tcp:{http_port}:interface=127.0.0.1",
        "--db",
        f"sqlite:///{db}",
    ]
    srv = Server("sidecar", argv, port, workdir)
    srv.start(timeout=args.startup_timeout)
    print(f"  sidecar answered {srv.startup_s:.2f} s after spawn", flush=True)
    ready = wait_ready(srv, http_port, args.suppressions, args.startup_timeout)
    info: dict = dict(
        startup_s=round(srv.startup_s or 0, 2),
        **ready,
        import_s=None if import_s is None else round(import_s, 1),
        rss_idle_mb=round(srv.rss_kb().get("VmRSS", 0) / 1024, 1),
    )
    gauges = ("sidecar_suppressions", "sidecar_ratelimit_keys")
    info["metrics_ready"] = metrics(http_port, gauges)
    print(f"  ready {ready}, {info['metrics_ready']}; warming {args.keys:,} keys ...", flush=True)
    assert srv.proc is not None
    warm = run_load(port, args, expect="policy", server_pid=srv.proc.pid, warmup_only=True)
    info["warmup"] = warm["warmup"]
    info["metrics_warm"] = metrics(http_port, gauges)
    info["rss_warm_mb"] = round(srv.rss_kb().get("VmRSS", 0) / 1024, 1)
    print(
        f"  warm-up: {warm['warmup']['requests']:,} requests in {warm['warmup']['seconds']} s,"
        f" {info['metrics_warm']}, RSS {info['rss_warm_mb']} MB",
        flush=True,
    )
    info["http_port"] = http_port
    return srv, info


def sidecar_end(srv: Server, info: dict) -> dict:
    rss = srv.rss_kb()
    info.update(
        rss_mb=round(rss.get("VmRSS", 0) / 1024, 1),
        hwm_mb=round(rss.get("VmHWM", 0) / 1024, 1),
        metrics_end=metrics(
            info["http_port"],
            (
                "sidecar_suppressions",
                "sidecar_ratelimit_keys",
                "sidecar_policy_errors_total",
                "sidecar_ratelimit_rejections_total",
                "sidecar_suppressed_recipients_total",
            ),
        ),
    )
    if srv.proc is not None and srv.proc.poll() is not None:
        info["note"] = f"sidecar exited with {srv.proc.returncode}"
    return info


def combine(rounds: list[dict]) -> dict:
    """The best round's figures (other load only ever slows a round down), the median
    req/s, the worst latency of all rounds; errors and mismatches summed."""
    best = max(rounds, key=lambda r: r["rps"])
    med = {k: best[k] for k in ("rps", "p50_ms", "p99_ms", "p999_ms", "other_cpu", "server_cpu")}
    med.update(
        rps_median=round(statistics.median(r["rps"] for r in rounds), 1),
        rps_min=min(r["rps"] for r in rounds),
        max_ms=max(r["max_ms"] for r in rounds),
        errors=sum(r["errors"] for r in rounds),
        mismatches=sum(r["mismatches"] for r in rounds),
        samples=[x for r in rounds for x in r["samples"]][:10],
        rounds=rounds,
    )
    return med


def profile_summary(path: str, top: int = 15) -> str:
    """Top frames by own and by inclusive samples from py-spy's raw (collapsed) output."""
    own: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    with open(path) as f:
        for line in f:
            stack, _, n = line.rstrip("\n").rpartition(" ")
            if not n.isdigit():
                continue
            count = int(n)
            total += count
            # "func (path:line)" -> "func (path)": aggregate per function
            frames = [re.sub(r":\d+\)$", ")", fr) for fr in stack.split(";")]
            own[frames[-1]] = own.get(frames[-1], 0) + count
            for fr in set(frames):
                incl[fr] = incl.get(fr, 0) + count
    if not total:
        return "no samples"
    out = [f"{total} samples; own time:"]
    out += [f"  {100 * c / total:5.1f}%  {fr}" for fr, c in sorted(own.items(), key=lambda x: -x[1])[:top]]
    out.append("inclusive, sidecar code:")
    mine = [(fr, c) for fr, c in incl.items() if "sidecar/" in fr]
    out += [f"  {100 * c / total:5.1f}%  {fr}" for fr, c in sorted(mine, key=lambda x: -x[1])[:top]]
    return "\n".join(out)


def fmt(v: object, spec: str = "") -> str:
    if v is None:
        return "-"
    return format(v, spec)


def startup(r: dict) -> str:
    if r.get("startup_s") is None:
        return "-"
    ready = [v for v in (r.get("healthz_s"), r.get("suppressed_550_s")) if v is not None]
    return f"{r['startup_s']:.2f} / {max(ready):.2f}" if ready else f"{r['startup_s']:.2f} / -"


def table(results: dict[str, dict]) -> str:
    base = results.get("linereceiver", {}).get("rps")
    head = (
        "server",
        "req/s",
        "vs LineReceiver",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms (all rounds)",
        "req/s median (min)",
        "errors / mismatches",
        "other CPU",
        "RSS MB",
        "start-up s: answer / ready",
    )
    rows = []
    for name, r in results.items():
        if "error" in r:
            rows.append((name, "failed: " + r["error"].splitlines()[0][:60]) + ("",) * 10)
            continue
        if "rps" not in r:
            continue
        ratio = f"{r['rps'] / base:.2f}x" if base else "-"
        rows.append(
            (
                name,
                f"{r['rps']:,.0f}",
                ratio,
                f"{r['p50_ms']:.2f}",
                f"{r['p99_ms']:.2f}",
                f"{r['p999_ms']:.2f}",
                f"{r['max_ms']:.1f}",
                f"{r['rps_median']:,.0f} ({r['rps_min']:,.0f})",
                f"{r['errors']} / {r['mismatches']}",
                f"{r['other_cpu']:.0%}",
                fmt(r.get("rss_mb"), ".0f"),
                startup(r),
            )
        )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def stop_profiler(profiler: subprocess.Popen | None) -> None:
    if profiler is None or profiler.poll() is not None:
        return
    profiler.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
    try:
        profiler.wait(timeout=30)
    except subprocess.TimeoutExpired:
        profiler.kill()
        profiler.wait(timeout=10)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=10.0, help="timed seconds per server per round")
    p.add_argument("--rounds", type=int, default=3, help="rounds; figures are the best round's")
    p.add_argument(
        "--max-other-cpu",
        type=float,
        default=0.15,
        help="redo a round when other processes used more CPU than this (cores)",
    )
    p.add_argument("--retries", type=int, default=3, help="redos of a disturbed round")
    p.add_argument(
        "--quiet-wait", type=float, default=60.0, help="before each round, wait up to this long for an idle machine"
    )
    p.add_argument("--connections", type=int, default=50)
    p.add_argument("--procs", type=int, default=1, help="load-generator processes")
    p.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="paced load at this many requests/s over all connections (policy_load.py --rate; 0: saturating)",
    )
    p.add_argument("--suppressions", type=int, default=1_000_000)
    p.add_argument("--keys", type=int, default=100_000, help="active rate-limit keys (senders)")
    p.add_argument("--suppressed-fraction", type=float, default=0.1)
    p.add_argument("--servers", default="linereceiver,framed,sidecar")
    p.add_argument("--sidecar", default=SIDECAR, help="the sidecar executable")
    p.add_argument("--config", metavar="TOML", help="sidecar config instead of the built-in one")
    p.add_argument("--startup-timeout", type=float, default=180.0)
    p.add_argument(
        "--cache-dir", default="/tmp/sidecar-bench-cache", help="keeps the generated CSV and seeded DB between runs"
    )
    p.add_argument("--py-spy", metavar="BIN", help="profile the sidecar's timed rounds with py-spy")
    p.add_argument("--py-spy-out", default="/tmp/sidecar-bench-profile.txt")
    p.add_argument("--py-spy-gil", action="store_true", help="only samples holding the GIL (py-spy --gil)")
    p.add_argument("--keep-logs", metavar="FILE", help="copy the sidecar's output here")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = p.parse_args(argv)
    if not 0 < args.duration <= 600 or not 0 < args.rounds <= 20:
        raise SystemExit("--duration must be in (0, 600] and --rounds in 1..20")

    cache = Path(args.cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="sidecar-bench-"))
    names = args.servers.split(",")
    servers: dict[str, Server] = {}
    results: dict[str, dict] = {n: {} for n in names}
    profiler = None
    print(
        f"{args.connections} connections, {args.rounds} x {args.duration:g} s per server, "
        f"{args.suppressions:,} suppressions, {args.keys:,} keys, "
        f"{args.suppressed_fraction:.0%} suppressed recipients",
        flush=True,
    )
    try:
        if "sidecar" in names:  # alone on the machine while it starts
            print("sidecar ...", flush=True)
            try:
                servers["sidecar"], results["sidecar"] = start_sidecar(args, workdir, cache)
            except (RuntimeError, subprocess.TimeoutExpired, OSError) as exc:
                results["sidecar"] = {"error": str(exc)}
                print(f"  sidecar failed: {exc}", flush=True)
                if args.keep_logs and (workdir / "sidecar.log").exists():
                    shutil.copyfile(workdir / "sidecar.log", args.keep_logs)
        for name in names:
            if name != "sidecar":
                port = free_port()
                srv = Server(name, [PY, str(BENCH / "bare_servers.py"), name, "--port", str(port)], port, workdir)
                srv.start(timeout=30)
                servers[name] = srv
        if args.py_spy and "sidecar" in servers:
            pid = servers["sidecar"].proc.pid  # type: ignore[union-attr]
            budget = int(args.rounds * len(servers) * (args.duration + 30) + 60)
            profiler = subprocess.Popen(
                [
                    args.py_spy,
                    "record",
                    "--pid",
                    str(pid),
                    "--format",
                    "raw",
                    "--rate",
                    "200",
                    "--duration",
                    str(budget),
                    "--output",
                    args.py_spy_out,
                    "--nonblocking",
                    *(["--gil"] if args.py_spy_gil else []),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        rounds: dict[str, list[dict]] = {n: [] for n in servers}
        for i in range(args.rounds):
            for name in names:
                if name not in servers:
                    continue
                srv = servers[name]
                for attempt in range(args.retries + 1):
                    wait_quiet(0.1, args.quiet_wait)
                    res = run_load(
                        srv.port,
                        args,
                        server_pid=srv.proc.pid,  # type: ignore[union-attr]
                        expect="policy" if name == "sidecar" else "dunno",
                    )
                    if res["other_cpu"] <= args.max_other_cpu or attempt == args.retries:
                        break
                    print(f"round {i + 1} {name}: disturbed (other CPU {res['other_cpu']:.0%}), again", flush=True)
                res["attempts"] = attempt + 1
                rounds[name].append(res)
                print(
                    f"round {i + 1} {name}: {res['rps']:,.0f} req/s, p99 {res['p99_ms']:.2f} ms,"
                    f" {res['errors']} errors, {res['mismatches']} mismatches, CPU server"
                    f" {res['server_cpu']:.0%} generator {res['generator_cpu']:.0%}"
                    f" other {res['other_cpu']:.0%}",
                    flush=True,
                )
                for line in res["samples"][:3]:
                    print("    " + line)
        stop_profiler(profiler)
        for name, rs in rounds.items():
            results[name].update(combine(rs))
        if "sidecar" in servers:
            sidecar_end(servers["sidecar"], results["sidecar"])
    finally:
        stop_profiler(profiler)
        for srv in servers.values():
            srv.stop()
        if args.keep_logs and "sidecar" in servers:
            shutil.copyfile(servers["sidecar"].log_path, args.keep_logs)
        shutil.rmtree(workdir, ignore_errors=True)

    print()
    print(table(results))
    sc = results.get("sidecar", {})
    if "rps" in sc:
        print(
            f"\nsidecar: first answer {sc['startup_s']} s after spawn, /healthz 200 at "
            f"{fmt(sc['healthz_s'])} s, suppressed probe refused at {fmt(sc['suppressed_550_s'])} s"
            f" ({args.suppressions:,} suppressions; import "
            f"{fmt(sc['import_s']) + ' s' if sc['import_s'] is not None else 'cached'})"
        )
        print(
            f"sidecar RSS: idle {sc['rss_idle_mb']} MB, after warm-up {sc['rss_warm_mb']} MB,"
            f" after the run {sc['rss_mb']} MB (peak {sc['hwm_mb']} MB)"
        )
        print(
            f"sidecar metrics: ready {sc['metrics_ready']}, after warm-up {sc['metrics_warm']}, end {sc['metrics_end']}"
        )
        if profiler is not None and os.path.exists(args.py_spy_out):
            print(f"\npy-spy profile of the sidecar's rounds ({args.py_spy_out}):")
            print(profile_summary(args.py_spy_out))
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=1))
    failed = any("error" in r or r.get("errors") or r.get("mismatches") for r in results.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
