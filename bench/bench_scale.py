"""Scale-out benchmark: PostgreSQL import and start-up, Redis rate limits beside in-memory ones.

Starts a private PostgreSQL and a private Redis on loopback (tests/harness/services.py: own data
directory, own port), then measures, in this order:

1. import: `sidecar suppressions import FILE.csv --db postgresql+psycopg://...` of N rows
   into an empty database, timed from spawn to exit (target: 1,000,000 rows in <= 60 s);
   then checks that every row is in `suppressions` and in the change feed; then the same
   file again (every row an update);
2. start-up: `sidecar serve --db postgresql+psycopg://...` alone on the machine, from
   spawn to the first answer on the policy port (the index is loaded before the port
   opens), and until /healthz is 200 and the last suppressed address is refused; RSS when
   ready and its peak (VmHWM); --startup-runs times (target: <= 15 s with 1,000,000);
3. throughput: two servers on the same database, rate limits in memory and in Redis,
   each warmed (one request per sender, so every rate-limit key is live), then driven in
   alternating rounds by bench/policy_load.py (50 connections, 10% suppressed recipients,
   every reply checked); best round and median per backend, p99, and the Redis/memory ratio.

PostgreSQL runs durable by default (fsync, synchronous_commit and full_page_writes on, as
in production); --fast-pg keeps the test settings (all three off). A step (import,
start-up, round) in which processes other than ours (server, generator, PostgreSQL, Redis)
used more than --max-other-cpu of a core is run again (bench/scale_env.py).

    .venv/bin/python bench/bench_scale.py                          # full: 1,000,000 rows
    .venv/bin/python bench/bench_scale.py --rows 100000 --keys 10000 --duration 5 --rounds 2 --startup-runs 1
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))
from policy_bench import (  # noqa: E402 - sibling bench modules
    Server,
    metrics,
    suppression_csv,
    wait_quiet,
    wait_ready,
)
from scale_env import CpuWatch, db_counts, pg_pids, pg_remove, pg_settings, pg_start  # noqa: E402

from tests.harness.services import PostgresServer, RedisServer  # noqa: E402
from tests.harness.system import free_port  # noqa: E402

VENV_BIN = ROOT / ".venv" / "bin"
PY = str(VENV_BIN / "python") if (VENV_BIN / "python").exists() else sys.executable
SIDECAR = str(VENV_BIN / "sidecar")
IMPORT_TARGET_S, STARTUP_TARGET_S = 60.0, 15.0

# One key per sender, each live for the whole run (864 s of GCRA time per request) and never
# refused (huge burst): every request costs one full rate-limit decision, nothing more.
CONFIG = """\
[ratelimit]
backend = "{backend}"
redis_url = "{redis_url}"
[[ratelimit.rules]]
name = "per-sender"
key = ["sender"]
count = "recipients"
limits = [{{ rate = 100, per = "1d", burst = 100000000 }}]

[ingest]
socket = ""
"""
GAUGES = (
    "sidecar_suppressions",
    "sidecar_ratelimit_keys",
    "sidecar_ratelimit_redis_up",
    "sidecar_ratelimit_fallback_total",
    "sidecar_policy_errors_total",
)


def run_import(args: argparse.Namespace, csv_path: Path, url: str, pg: PostgresServer) -> dict:
    watch = CpuWatch(pg_pids(pg), pg)
    t0 = time.monotonic()
    res = subprocess.run(
        [args.sidecar, "suppressions", "import", str(csv_path), "--db", url, "--json", "--no-progress"],
        capture_output=True,
        text=True,
        timeout=args.import_timeout,
        cwd=ROOT,
        check=False,
    )
    wall = time.monotonic() - t0
    if res.returncode != 0:
        raise RuntimeError(f"import failed ({res.returncode}):\n{res.stdout[-2000:]}{res.stderr[-3000:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    t_end = time.monotonic() + 2  # its PostgreSQL backend ends just after it: wait until reaped
    while time.monotonic() < t_end and set(pg_pids(pg)) - set(watch.pid0):
        time.sleep(0.02)
    cpu = watch.stop(wall=wall)
    return {
        "wall_s": round(wall, 2),
        "command_s": out["seconds"],
        "imported": out["imported"],
        "import_cpu": cpu["children_cpu"],
        "other_cpu": cpu["other_cpu"],
        "other_top": cpu["other_top"],
        "loadavg": cpu["loadavg"],
    }


def rss(srv: Server) -> dict[str, float]:
    return {k: round(v / 1024, 1) for k, v in srv.rss_kb().items()}


def start_server(
    args: argparse.Namespace,
    name: str,
    backend: str,
    url: str,
    redis_url: str,
    workdir: Path,
    servers: list[Server],
    ours: list[int],
    pg: PostgresServer,
) -> tuple[Server, dict]:
    """Start a sidecar, listed in ``servers`` before it is spawned (so clean-up always finds it).

    ``ours``: PIDs whose CPU is not "other" (PostgreSQL, Redis, the other servers).
    """
    cfg = workdir / f"{name}.toml"
    cfg.write_text(CONFIG.format(backend=backend, redis_url=redis_url))
    port, http_port = free_port(), free_port()
    argv = [
        args.sidecar,
        "serve",
        "--config",
        str(cfg),
        "--db",
        url,
        "--policy",
        f"tcp:{port}:interface=127.0.0.1",
        "--http",
        f"tcp:{http_port}:interface=127.0.0.1",
    ]
    srv = Server(name, argv, port, workdir)
    servers.append(srv)
    watch = CpuWatch(ours, pg)
    srv.start(timeout=args.startup_timeout)
    ready = wait_ready(srv, http_port, args.rows, args.startup_timeout)
    assert srv.proc is not None
    cpu = watch.stop(late=[srv.proc.pid])
    mem = rss(srv)
    info = {
        "answer_s": round(srv.startup_s or 0.0, 2),
        **ready,
        "rss_mb": mem.get("VmRSS"),
        "peak_mb": mem.get("VmHWM"),
        "http_port": http_port,
        "other_cpu": cpu["other_cpu"],
        "other_top": cpu["other_top"],
        "loadavg": cpu["loadavg"],
        "metrics": metrics(http_port, GAUGES),
    }
    return srv, info


def load(args: argparse.Namespace, port: int, ours: list[int], pg: PostgresServer, *, warmup: bool = False) -> dict:
    """One policy_load.py run; CPU of the server, generator, PostgreSQL, Redis and the rest."""
    argv = [
        PY,
        str(HERE / "policy_load.py"),
        "--port",
        str(port),
        "--json",
        "--expect",
        "policy",
        "--connections",
        str(args.connections),
        "--senders",
        str(args.keys),
        "--suppressed",
        str(args.rows),
        "--duration",
        str(args.duration),
    ]
    if warmup:
        argv.append("--warmup-only")
    elif getattr(args, "rate", 0):
        argv += ["--rate", str(args.rate)]
    watch = CpuWatch(ours, pg)
    res = subprocess.run(
        argv, capture_output=True, text=True, timeout=args.duration + 600 + args.keys / 500, cwd=ROOT, check=False
    )
    cpu = watch.stop()
    lines = res.stdout.strip().splitlines()
    if not lines:
        raise RuntimeError(f"policy_load.py failed ({res.returncode}):\n{res.stderr[-3000:]}")
    out = json.loads(lines[-1])
    out.update(
        wall_s=cpu["wall_s"],
        server_cpu=cpu["first_pid_cpu"],
        generator_cpu=cpu["children_cpu"],
        other_cpu=cpu["other_cpu"],
        other_top=cpu["other_top"],
        loadavg=cpu["loadavg"],
    )
    return out


def summary(rounds: list[dict]) -> dict:
    best = max(rounds, key=lambda r: r["rps"])
    return {
        "rps": best["rps"],
        "p50_ms": best["p50_ms"],
        "p99_ms": best["p99_ms"],
        "p999_ms": best["p999_ms"],
        "server_cpu": best["server_cpu"],
        "rps_median": round(statistics.median(r["rps"] for r in rounds), 1),
        "p99_median_ms": round(statistics.median(r["p99_ms"] for r in rounds), 3),
        "errors": sum(r["errors"] for r in rounds),
        "mismatches": sum(r["mismatches"] for r in rounds),
        "samples": [s for r in rounds for s in r["samples"]][:5],
    }


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000, help="suppressions to import and load")
    p.add_argument("--startup-runs", type=int, default=3, help="times the server is started alone")
    p.add_argument("--keys", type=int, default=100_000, help="active rate-limit keys (senders)")
    p.add_argument("--connections", type=int, default=50)
    p.add_argument("--duration", type=float, default=10.0, help="seconds per round per backend")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (memory, redis, ...)")
    p.add_argument(
        "--max-other-cpu",
        type=float,
        default=0.15,
        help="redo a round when other processes used more CPU than this (cores)",
    )
    p.add_argument("--retries", type=int, default=3, help="redos of a disturbed round")
    p.add_argument("--quiet-wait", type=float, default=60.0, help="wait up to this long for an idle machine")
    p.add_argument("--fast-pg", action="store_true", help="PostgreSQL without fsync (the test settings)")
    p.add_argument("--skip", default="", help="comma-separated parts to skip: reimport,startup,throughput")
    p.add_argument("--sidecar", default=SIDECAR, help="the sidecar executable")
    p.add_argument(
        "--source",
        metavar="DIR",
        help="run the sidecar package from this tree (e.g. `git archive HEAD` unpacked) instead of "
        "the installed one, via PYTHONPATH",
    )
    p.add_argument("--cache-dir", default="/tmp/sidecar-bench-cache", help="keeps the generated CSV")
    p.add_argument("--startup-timeout", type=float, default=300.0)
    p.add_argument("--import-timeout", type=float, default=1800.0)
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = p.parse_args(argv)
    if not (
        0 < args.rows <= 5_000_000
        and 0 < args.duration <= 600
        and 0 < args.rounds <= 20
        and 0 <= args.startup_runs <= 10
        and 0 < args.connections <= 1000
        and 0 < args.keys <= 1_000_000
    ):
        raise SystemExit(
            "bounded runs only: --rows <= 5e6, --duration <= 600, --rounds <= 20, "
            "--startup-runs <= 10, --connections <= 1000, --keys <= 1e6"
        )
    skip = set(filter(None, args.skip.split(",")))
    if args.source:
        if not (Path(args.source) / "sidecar" / "__init__.py").exists():
            raise SystemExit(f"--source {args.source}: no sidecar package there")
        os.environ["PYTHONPATH"] = str(Path(args.source).resolve())
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up on SIGTERM too

    cache = Path(args.cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="sidecar-bench-scale-"))
    result: dict = {"rows": args.rows, "loadavg_start": os.getloadavg()}
    servers: list[Server] = []
    pg = redis = None
    try:
        print(
            f"{args.rows:,} suppressions; PostgreSQL {'fast (no fsync)' if args.fast_pg else 'durable'};"
            f" load avg {os.getloadavg()[0]:.2f}",
            flush=True,
        )
        csv_path = suppression_csv(cache, args.rows)
        pg = pg_start(args.fast_pg)
        redis = RedisServer().start()
        result["postgresql"] = pg_settings(pg)
        for attempt in range(args.retries + 1):  # each attempt into a new, empty database
            url = pg.create_database("scale")
            wait_quiet(0.1, args.quiet_wait)
            print(f"import ({pg.url('scale')}) ...", flush=True)
            imp = run_import(args, csv_path, url, pg)
            print(
                f"  {imp['imported']:,} rows in {imp['wall_s']} s from spawn to exit ({imp['command_s']} s by"
                f" the command's own clock); CPU import {imp['import_cpu']:.0%}, other {imp['other_cpu']:.0%},"
                f" load avg {imp['loadavg']:.2f}",
                flush=True,
            )
            if imp["other_cpu"] <= args.max_other_cpu or attempt == args.retries:
                break
            print(f"  disturbed ({', '.join(imp['other_top'])}), again", flush=True)
        imp["attempts"] = attempt + 1
        imp["suppressions"], imp["feed_addresses"] = db_counts(pg, "scale")
        imp["complete"] = imp["suppressions"] == imp["feed_addresses"] == args.rows
        result["import"] = imp
        print(
            f"  {imp['suppressions']:,} active suppressions, {imp['feed_addresses']:,} addresses in the change feed",
            flush=True,
        )
        if "reimport" not in skip:  # the same file again: every row now updates an existing one
            wait_quiet(0.1, args.quiet_wait)
            result["reimport"] = again = run_import(args, csv_path, url, pg)
            print(
                f"  again over the same rows (all updates): {again['wall_s']} s, other CPU {again['other_cpu']:.0%}",
                flush=True,
            )

        if "startup" not in skip:
            runs = []
            for i in range(args.startup_runs):
                for attempt in range(args.retries + 1):
                    wait_quiet(0.1, args.quiet_wait)
                    srv, info = start_server(
                        args,
                        f"startup{i}",
                        "memory",
                        url,
                        redis.url,
                        workdir,
                        servers,
                        [*pg_pids(pg), *([redis.pid] if redis.pid else [])],
                        pg,
                    )
                    srv.stop()
                    servers.remove(srv)
                    print(
                        f"  start-up {i + 1}: first answer {info['answer_s']} s, /healthz {info['healthz_s']} s,"
                        f" suppressed refused {info['suppressed_550_s']} s, RSS {info['rss_mb']} MB"
                        f" (peak {info['peak_mb']} MB), {info['metrics'].get('sidecar_suppressions', 0):,.0f}"
                        f" in the index; other CPU {info['other_cpu']:.0%}, load avg {info['loadavg']:.2f}",
                        flush=True,
                    )
                    if info["other_cpu"] <= args.max_other_cpu or attempt == args.retries:
                        break
                    print(f"  disturbed ({', '.join(info['other_top'])}), again", flush=True)
                info["attempts"] = attempt + 1
                runs.append(info)
            result["startup"] = runs

        if "throughput" not in skip:
            backends = {}
            for backend in ("memory", "redis"):
                wait_quiet(0.1, args.quiet_wait)
                srv, info = start_server(
                    args,
                    backend,
                    backend,
                    url,
                    redis.url,
                    workdir,
                    servers,
                    [*(s.proc.pid for s in servers if s.proc), *pg_pids(pg), *([redis.pid] if redis.pid else [])],
                    pg,
                )
                assert srv.proc is not None
                ours = [
                    srv.proc.pid,
                    *(s.proc.pid for s in servers[:-1] if s.proc),
                    *pg_pids(pg),
                    *([redis.pid] if redis.pid else []),
                ]
                warm = load(args, srv.port, ours, pg, warmup=True)
                info["warmup"] = warm.get("warmup")
                info["metrics_warm"] = metrics(info["http_port"], GAUGES)
                print(
                    f"  {backend}: ready in {info['answer_s']} s, warmed {args.keys:,} keys, {info['metrics_warm']}",
                    flush=True,
                )
                backends[backend] = (srv, info, ours, [])
            for i in range(args.rounds):
                for backend, (srv, _info, _, rounds) in backends.items():
                    assert srv.proc is not None  # CPU of the server under test first, then the rest of ours
                    ours = [
                        srv.proc.pid,
                        *(s.proc.pid for s in servers if s is not srv and s.proc),
                        *pg_pids(pg),
                        *([redis.pid] if redis.pid else []),
                    ]
                    for attempt in range(args.retries + 1):
                        wait_quiet(0.1, args.quiet_wait)
                        r = load(args, srv.port, ours, pg)
                        if r["other_cpu"] <= args.max_other_cpu or attempt == args.retries:
                            break
                        print(
                            f"  round {i + 1} {backend}: disturbed (other CPU {r['other_cpu']:.0%}:"
                            f" {', '.join(r['other_top'])}), again",
                            flush=True,
                        )
                    r["attempts"] = attempt + 1
                    rounds.append(r)
                    print(
                        f"  round {i + 1} {backend}: {r['rps']:,.0f} req/s, p99 {r['p99_ms']:.2f} ms,"
                        f" {r['errors']} errors, {r['mismatches']} mismatches; CPU server {r['server_cpu']:.0%},"
                        f" generator {r['generator_cpu']:.0%}, other {r['other_cpu']:.0%};"
                        f" load avg {r['loadavg']:.2f}",
                        flush=True,
                    )
            tp = {}
            fb = "sidecar_ratelimit_fallback_total"
            for backend, (srv, info, _ours, rounds) in backends.items():
                end = metrics(info["http_port"], GAUGES)
                tp[backend] = {
                    **summary(rounds),
                    "rounds": rounds,
                    "ready_s": info["answer_s"],
                    "rss_mb": rss(srv).get("VmRSS"),
                    "metrics_end": end,
                    "fallbacks": end.get(fb, 0) - info["metrics_warm"].get(fb, 0),
                }
            result["throughput"] = tp
    finally:
        for srv in servers:
            srv.stop()
        if redis is not None:
            redis.remove()
        if pg is not None:
            pg_remove(pg)
        shutil.rmtree(workdir, ignore_errors=True)

    report(result, args)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": result}, indent=1))
    tp = result.get("throughput", {})
    bad = not result["import"]["complete"] or any(t["errors"] or t["mismatches"] for t in tp.values())
    return 1 if bad else 0


def report(result: dict, args: argparse.Namespace) -> None:
    imp = result["import"]
    full = args.rows >= 1_000_000
    print(f"\nPostgreSQL {result['postgresql']}")
    print(
        f"import: {imp['imported']:,} rows in {imp['wall_s']} s (spawn to exit)"
        + (f": target <= {IMPORT_TARGET_S:.0f} s {verdict(imp['wall_s'] <= IMPORT_TARGET_S)}" if full else "")
        + ("" if imp["complete"] else "; INCOMPLETE: rows missing from the table or the change feed")
    )
    if "reimport" in result:
        print(f"import of the same file again (every row an update): {result['reimport']['wall_s']} s")
    if result.get("startup"):
        runs = result["startup"]
        ready = [max(r["answer_s"], r["healthz_s"] or 0, r["suppressed_550_s"] or 0) for r in runs]
        print(
            f"start-up: first answer {', '.join(str(r['answer_s']) for r in runs)} s; ready (healthz and the"
            f" last suppressed address refused) {', '.join(f'{x:.2f}' for x in ready)} s;"
            f" RSS {', '.join(str(r['rss_mb']) for r in runs)} MB, peak"
            f" {', '.join(str(r['peak_mb']) for r in runs)} MB"
            + (
                f": target <= {STARTUP_TARGET_S:.0f} s {verdict(max(ready) <= STARTUP_TARGET_S)}"
                f" (median {statistics.median(ready):.2f} s)"
                if full
                else ""
            )
        )
    tp = result.get("throughput")
    if tp:
        print(
            f"\n{args.connections} connections, {args.keys:,} rate-limit keys, {args.rounds} alternating"
            f" rounds x {args.duration:g} s per backend (best round; median in brackets)"
        )
        print(
            "| rate limits | req/s | p50 ms | p99 ms | p99.9 ms | req/s median | p99 median ms |"
            " errors / mismatches | fallback decisions (timed) | RSS MB |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        for name, t in tp.items():
            fb = t["fallbacks"]
            print(
                f"| {name} | {t['rps']:,.0f} | {t['p50_ms']:.2f} | {t['p99_ms']:.2f} | {t['p999_ms']:.2f} |"
                f" {t['rps_median']:,.0f} | {t['p99_median_ms']:.2f} | {t['errors']} / {t['mismatches']} |"
                f" {fb:,.0f} | {t['rss_mb']} |"
            )
        if "memory" in tp and "redis" in tp:
            m, r = tp["memory"], tp["redis"]
            print(
                f"redis / memory: {r['rps'] / m['rps']:.2f}x req/s"
                f" (medians {r['rps_median'] / m['rps_median']:.2f}x), p99 {r['p99_ms']:.2f} vs {m['p99_ms']:.2f} ms"
            )
        for name, t in tp.items():
            for s in t["samples"][:3]:
                print(f"  {name}: {s}")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
