"""Policy-server benchmark: the sidecar against two bare Twisted servers, same run.

Starts each server as a subprocess on a loopback port, drives it with
bench/policy_load.py for the same duration and prints one table: req/s, latency
percentiles, the ratio to the bare LineReceiver, and for the sidecar its RSS and
start-up time (spawn until the policy port answers a request).

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
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from policy_load import (
    DUNNO_REPLY,
    RCPT_ATTRIBUTES,
    clean_address,
    sender_address,
    suppressed_address,
)

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
VENV_BIN = ROOT / ".venv" / "bin"
PY = str(VENV_BIN / "python") if (VENV_BIN / "python").exists() else sys.executable
SIDECAR = str(VENV_BIN / "sidecar")

CONFIG_TOML = """\
[suppression]
# default reply: "550 5.1.1 <{address}>: recipient suppressed ..."

[ratelimit]
[[ratelimit.rules]]
name = "per-sender"
key = ["sender"]
count = "recipients"
limits = [{ rate = 1000000, per = "1m", burst = 1000 }]

[ingest]
socket = ""
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def probe_request() -> bytes:
    attrs = dict(RCPT_ATTRIBUTES)
    attrs["sender"] = sender_address(0)
    attrs["recipient"] = clean_address(0)
    return "".join(f"{k}={v}\n" for k, v in attrs.items()).encode() + b"\n"


def answers(port: int, timeout: float = 2.0) -> bytes | None:
    """One request on a fresh connection; the reply, or None if the port is not ready."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(probe_request())
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

    def start(self, timeout: float) -> None:
        log = open(self.log_path, "wb")  # noqa: SIM115 - closed with the process
        t0 = time.monotonic()
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=ROOT, start_new_session=True)
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


def run_load(port: int, args: argparse.Namespace, *, expect: str, warmup: bool) -> dict:
    argv = [PY, str(BENCH / "policy_load.py"), "--port", str(port), "--json",
            "--duration", str(args.duration), "--connections", str(args.connections),
            "--procs", str(args.procs), "--senders", str(args.keys),
            "--suppressed", str(args.suppressions),
            "--suppressed-fraction", str(args.suppressed_fraction), "--expect", expect]
    if warmup:
        argv.append("--warmup")
    limit = args.duration + 600 + (args.keys / 1000 if warmup else 0)
    out = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=limit, cwd=ROOT)
    lines = out.stdout.strip().splitlines()
    if not lines:
        raise RuntimeError(f"load generator failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(lines[-1])


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


def seeded_db(cache: Path, workdir: Path, n: int) -> tuple[Path, float | None]:
    """A SQLite DB with n suppressions in workdir; import time, or None when cached."""
    cached = cache / f"bench-{n}-{source_digest()}.db"
    db = workdir / "bench.db"
    import_s = None
    if not cached.exists():
        csv_path = suppression_csv(cache, n)
        tmp = cache / f"import-{os.getpid()}.db"
        tmp.unlink(missing_ok=True)
        t0 = time.monotonic()
        res = subprocess.run([SIDECAR, "suppressions", "import", str(csv_path),
                              "--db", f"sqlite:///{tmp}"], check=False, capture_output=True,
                             text=True,
                             timeout=1800, cwd=ROOT)
        import_s = time.monotonic() - t0
        if res.returncode != 0:
            tmp.unlink(missing_ok=True)
            raise RuntimeError(f"suppressions import failed ({res.returncode}):\n"
                               f"{res.stdout[-2000:]}{res.stderr[-3000:]}")
        tmp.rename(cached)
        for old in cache.glob(f"bench-{n}-*.db"):
            if old != cached:
                old.unlink(missing_ok=True)
    shutil.copyfile(cached, db)
    return db, import_s


def healthz(port: int, timeout: float) -> float | None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        with contextlib.suppress(OSError), urllib.request.urlopen(
                f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            if r.status == 200:
                return time.monotonic() - t0
        time.sleep(0.05)
    return None


def bench_bare(kind: str, args: argparse.Namespace, workdir: Path) -> dict:
    port = free_port()
    srv = Server(kind, [PY, str(BENCH / "bare_servers.py"), kind, "--port", str(port)],
                 port, workdir)
    try:
        srv.start(timeout=30)
        res = run_load(port, args, expect="dunno", warmup=False)
    finally:
        srv.stop()
    return res


def bench_sidecar(args: argparse.Namespace, workdir: Path, cache: Path) -> dict:
    print(f"  seeding {args.suppressions:,} suppressions ...", flush=True)
    db, import_s = seeded_db(cache, workdir, args.suppressions)
    cfg = workdir / "bench.toml"
    cfg.write_text(CONFIG_TOML)
    port, http_port = free_port(), free_port()
    argv = [SIDECAR, "serve", "--config", str(cfg),
            "--policy", f"tcp:{port}:interface=127.0.0.1",
            "--http", f"tcp:{http_port}:interface=127.0.0.1",
            "--db", f"sqlite:///{db}"]
    srv = Server("sidecar", argv, port, workdir)
    try:
        srv.start(timeout=args.startup_timeout)
        print(f"  sidecar answered after {srv.startup_s:.2f} s; warming {args.keys:,} keys ...",
              flush=True)
        health_s = healthz(http_port, 30)
        rss_idle = srv.rss_kb()
        profiler = None
        if args.py_spy:
            assert srv.proc is not None
            profiler = subprocess.Popen(
                [args.py_spy, "record", "--pid", str(srv.proc.pid), "--format", "raw",
                 "--rate", "200", "--duration", str(int(args.duration + 60)),
                 "--output", args.py_spy_out, "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        res = run_load(port, args, expect="policy", warmup=True)
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                profiler.wait(timeout=30)
            if profiler.poll() is None:
                profiler.kill()
        rss = srv.rss_kb()
        res.update(startup_s=round(srv.startup_s or 0, 2),
                   healthz_after_probe_s=None if health_s is None else round(health_s, 2),
                   import_s=None if import_s is None else round(import_s, 1),
                   rss_idle_mb=round(rss_idle.get("VmRSS", 0) / 1024, 1),
                   rss_mb=round(rss.get("VmRSS", 0) / 1024, 1),
                   hwm_mb=round(rss.get("VmHWM", 0) / 1024, 1))
        if srv.proc is not None and srv.proc.poll() is not None:
            res["note"] = f"sidecar exited with {srv.proc.returncode}"
    finally:
        srv.stop()
    if args.keep_logs:
        shutil.copyfile(srv.log_path, args.keep_logs)
    return res


def fmt(v: object, spec: str = "") -> str:
    if v is None:
        return "-"
    return format(v, spec)


def table(results: dict[str, dict]) -> str:
    base = results.get("linereceiver", {}).get("rps")
    head = ("server", "req/s", "p50 ms", "p99 ms", "p99.9 ms", "vs LineReceiver",
            "errors", "mismatches", "RSS MB", "start-up s")
    rows = []
    for name, r in results.items():
        if "error" in r:
            rows.append((name, "failed: " + r["error"].splitlines()[0][:60]) + ("",) * 8)
            continue
        ratio = f"{r['rps'] / base:.2f}x" if base else "-"
        rows.append((name, fmt(r["rps"], ",.0f"), fmt(r["p50_ms"], ".2f"), fmt(r["p99_ms"], ".2f"),
                     fmt(r["p999_ms"], ".2f"), ratio, str(r["errors"]), str(r["mismatches"]),
                     fmt(r.get("rss_mb"), ".0f"), fmt(r.get("startup_s"), ".2f")))
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=30.0, help="timed seconds per server")
    p.add_argument("--connections", type=int, default=50)
    p.add_argument("--procs", type=int, default=1, help="load-generator processes")
    p.add_argument("--suppressions", type=int, default=1_000_000)
    p.add_argument("--keys", type=int, default=100_000, help="active rate-limit keys (senders)")
    p.add_argument("--suppressed-fraction", type=float, default=0.1)
    p.add_argument("--servers", default="linereceiver,framed,sidecar")
    p.add_argument("--startup-timeout", type=float, default=180.0)
    p.add_argument("--cache-dir", default="/tmp/sidecar-bench-cache",
                   help="keeps the generated CSV and seeded DB between runs")
    p.add_argument("--py-spy", metavar="BIN", help="profile the sidecar's timed run with py-spy")
    p.add_argument("--py-spy-out", default="/tmp/sidecar-bench-profile.txt")
    p.add_argument("--keep-logs", metavar="FILE", help="copy the sidecar's output here")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = p.parse_args(argv)
    if not 0 < args.duration <= 600:
        raise SystemExit("--duration must be in (0, 600]")

    cache = Path(args.cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="sidecar-bench-"))
    results: dict[str, dict] = {}
    print(f"{args.connections} connections, {args.duration:g} s per server, "
          f"{args.suppressions:,} suppressions, {args.keys:,} keys, "
          f"{args.suppressed_fraction:.0%} suppressed recipients", flush=True)
    try:
        for name in args.servers.split(","):
            print(f"{name} ...", flush=True)
            try:
                if name == "sidecar":
                    results[name] = bench_sidecar(args, workdir, cache)
                else:
                    results[name] = bench_bare(name, args, workdir)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                results[name] = {"error": str(exc)}
                print(f"  {name} failed: {exc}", flush=True)
                continue
            r = results[name]
            print(f"  {r['rps']:,.0f} req/s, p99 {r['p99_ms']:.2f} ms, "
                  f"{r['errors']} errors, {r['mismatches']} mismatches", flush=True)
            for s in r.get("samples", [])[:5]:
                print("    " + s)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print()
    print(table(results))
    sc = results.get("sidecar")
    if sc and "error" not in sc:
        print(f"\nsidecar: start-up {sc['startup_s']} s with {args.suppressions:,} suppressions"
              f" (import {fmt(sc['import_s'])} s{'' if sc['import_s'] else ', cached DB'}),"
              f" RSS idle {sc['rss_idle_mb']} MB, after run {sc['rss_mb']} MB"
              f" (peak {sc['hwm_mb']} MB); warm-up {sc.get('warmup')}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=1))
    failed = any("error" in r or r.get("errors") or r.get("mismatches") for r in results.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
