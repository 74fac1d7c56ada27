"""Rate limits in Redis beside rate limits in memory: req/s, p99, and where the CPU goes.

Starts a private Redis on loopback (tests/harness/services.py) and sidecar servers on a
SQLite copy seeded with --suppressions addresses: one with `ratelimit.backend = "memory"`,
one with `"redis"`, and with --before DIR two more (memory and Redis) running the sidecar
package found in DIR (e.g. `git archive BASE | tar -x -C DIR`), so that before and after
are measured in one run. Each is warmed (one request per sender: --keys live rate-limit keys),
then bench/policy_load.py drives them in alternating rounds (50 connections, every reply
checked). Per round it records the CPU of the server, the generator and Redis, and Redis's
own figures for the script (`INFO commandstats`: calls and microseconds per call).

    .venv/bin/python bench/bench_redis_limits.py                     # 100,000 keys
    .venv/bin/python bench/bench_redis_limits.py --keys 10000 --duration 5 --rounds 2
    .venv/bin/python bench/bench_redis_limits.py --before /tmp/base  # before/after in one run
    .venv/bin/python bench/bench_redis_limits.py --rate 5000         # paced: latency below saturation
    .venv/bin/python bench/bench_redis_limits.py --py-spy .venv/bin/py-spy   # profile the Redis-backed server
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
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT)]
from bench_scale import CONFIG, GAUGES, load  # noqa: E402 - sibling bench modules
from policy_bench import Server, metrics, profile_summary, seeded_db, wait_quiet, wait_ready  # noqa: E402

from tests.harness.services import RedisServer  # noqa: E402
from tests.harness.system import free_port  # noqa: E402

VENV_BIN = ROOT / ".venv" / "bin"
SIDECAR = str(VENV_BIN / "sidecar")
HZ = os.sysconf("SC_CLK_TCK")
BATCH = ("sidecar_ratelimit_redis_batch_sum", "sidecar_ratelimit_redis_batch_count")


def redis_stats(port: int) -> dict[str, float]:
    """Script calls and their total microseconds (EVAL and EVALSHA together), from INFO commandstats."""
    import redis

    r = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)
    out = {"calls": 0.0, "usec": 0.0}
    for name, v in r.info("commandstats").items():
        if name in ("cmdstat_evalsha", "cmdstat_eval"):
            out["calls"] += v["calls"]
            out["usec"] += v["usec"]
    r.close()
    return out


def proc_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        v = f.read().rsplit(")", 1)[1].split()
    return int(v[11]) + int(v[12])


def start(
    args: argparse.Namespace,
    name: str,
    backend: str,
    source: str | None,
    db: Path,
    redis_url: str,
    workdir: Path,
    servers: list[Server],
) -> tuple[Server, int]:
    cfg = workdir / f"{name}.toml"
    cfg.write_text(CONFIG.format(backend=backend, redis_url=redis_url))
    copy = workdir / f"{name}.db"  # each server its own copy of the seeded database
    shutil.copyfile(db, copy)
    port, http_port = free_port(), free_port()
    env = ["env", f"PYTHONPATH={Path(source).resolve()}"] if source else []  # env execs: the PID stays
    argv = [
        *env, args.sidecar, "serve", "--config", str(cfg), "--db", f"sqlite:///{copy}",
        "--policy", f"tcp:{port}:interface=127.0.0.1", "--http", f"tcp:{http_port}:interface=127.0.0.1",
    ]  # fmt: skip
    srv = Server(name, argv, port, workdir)
    servers.append(srv)
    srv.start(timeout=args.startup_timeout)
    wait_ready(srv, http_port, args.suppressions, args.startup_timeout)
    return srv, http_port


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--suppressions", type=int, default=100_000, help="suppressed addresses in the index")
    p.add_argument("--keys", type=int, default=100_000, help="active rate-limit keys (senders)")
    p.add_argument("--connections", type=int, default=50)
    p.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="paced load at this many requests/s over all connections (policy_load.py --rate; 0: saturating)",
    )
    p.add_argument("--duration", type=float, default=10.0, help="seconds per round per server")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    p.add_argument("--before", metavar="DIR", help="also memory and Redis servers running the sidecar package in DIR")
    p.add_argument("--py-spy", metavar="BIN", help="profile the Redis-backed server's rounds with py-spy")
    p.add_argument("--py-spy-out", default="/tmp/sidecar-bench-redis-profile.txt")
    p.add_argument("--quiet-wait", type=float, default=20.0, help="wait up to this long for an idle machine")
    p.add_argument("--sidecar", default=SIDECAR, help="the sidecar executable")
    p.add_argument("--cache-dir", default="/tmp/sidecar-bench-cache", help="keeps the seeded database")
    p.add_argument("--startup-timeout", type=float, default=300.0)
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = p.parse_args(argv)
    if not (0 < args.duration <= 600 and 0 < args.rounds <= 20 and 0 < args.keys <= 1_000_000):
        raise SystemExit("bounded runs only: --duration <= 600, --rounds <= 20, --keys <= 1e6")
    if args.before and not (Path(args.before) / "sidecar" / "__init__.py").exists():
        raise SystemExit(f"--before {args.before}: no sidecar package there")
    args.rows = args.suppressions  # the names bench_scale.load reads
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    cache = Path(args.cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="sidecar-bench-redis-"))
    servers: list[Server] = []
    redis = profiler = None
    results: dict = {"loadavg_start": os.getloadavg()}
    try:
        redis = RedisServer().start()
        assert redis.pid is not None
        subprocess.run(["redis-cli", "-p", str(redis.port), "CONFIG", "SET", "slowlog-log-slower-than", "1000"],
                       check=True, capture_output=True)  # fmt: skip
        db, _ = seeded_db(args, cache, workdir, args.suppressions)
        plan = [("memory", "memory", None), ("redis", "redis", None)]
        if args.before:
            plan += [("memory-before", "memory", args.before), ("redis-before", "redis", args.before)]
        started = {}
        for name, backend, source in plan:
            srv, http_port = start(args, name, backend, source, db, redis.url, workdir, servers)
            assert srv.proc is not None
            load(args, srv.port, [srv.proc.pid], None, warmup=True)  # type: ignore[arg-type]
            m = metrics(http_port, GAUGES)
            print(f"  {name}: ready in {srv.startup_s:.2f} s, warmed {args.keys:,} keys, {m}", flush=True)
            started[name] = (srv, http_port, m, [])
        if args.py_spy:
            pid = started["redis"][0].proc.pid  # type: ignore[union-attr]
            profiler = subprocess.Popen(
                [args.py_spy, "record", "--pid", str(pid), "--rate", "200", "--format", "raw",
                 "--output", args.py_spy_out, "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        for i in range(args.rounds):
            for name, (srv, port, _m, rounds) in started.items():
                assert srv.proc is not None
                wait_quiet(0.1, args.quiet_wait)
                rs0, t_redis0 = redis_stats(redis.port), proc_ticks(redis.pid)
                b0 = metrics(port, BATCH)
                ping_s = str(max(1, int(args.duration) - 1))  # Redis's own answer time to a PING meanwhile
                latency = subprocess.Popen(
                    ["redis-cli", "-p", str(redis.port), "--latency", "--raw", "-i", ping_s],
                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                )  # fmt: skip
                r = load(args, srv.port, [srv.proc.pid, redis.pid], None)  # type: ignore[arg-type]
                r["redis_ping_ms"] = (latency.communicate(timeout=args.duration + 30)[0].strip().splitlines() or [""])[
                    -1
                ]
                rs1, t_redis1 = redis_stats(redis.port), proc_ticks(redis.pid)
                b1 = metrics(port, BATCH)
                nb = b1.get(BATCH[1], 0) - b0.get(BATCH[1], 0)
                r["batch_mean"] = round((b1.get(BATCH[0], 0) - b0.get(BATCH[0], 0)) / nb, 1) if nb else None
                n = r["rps"] * r["wall_s"]
                calls = rs1["calls"] - rs0["calls"]
                r.update(
                    redis_cpu=round((t_redis1 - t_redis0) / HZ / r["wall_s"], 2),
                    script_calls=int(calls),
                    script_usec_per_call=round((rs1["usec"] - rs0["usec"]) / calls, 1) if calls else None,
                    server_us_per_req=round(r["server_cpu"] * r["wall_s"] / n * 1e6, 1) if n else None,
                    redis_us_per_req=round((t_redis1 - t_redis0) / HZ / n * 1e6, 1) if n else None,
                    uptime_loadavg=os.getloadavg(),
                )
                rounds.append(r)
                print(
                    f"  round {i + 1} {name}: {r['rps']:,.0f} req/s, p50 {r['p50_ms']:.2f} ms,"
                    f" p99 {r['p99_ms']:.2f} ms, {r['errors']} errors,"
                    f" {r['mismatches']} mismatches; CPU server {r['server_cpu']:.0%}"
                    f" ({r['server_us_per_req']} us/req),"
                    f" Redis {r['redis_cpu']:.0%} ({r['redis_us_per_req']} us/req, {calls:,.0f} script calls,"
                    f" {r['script_usec_per_call']} us each, {r['batch_mean']} decisions per call; PING min/max/avg ms"
                    f" {r['redis_ping_ms']}), generator {r['generator_cpu']:.0%},"
                    f" other {r['other_cpu']:.0%}; load avg {r['loadavg']:.2f}",
                    flush=True,
                )
        for name, (_srv, port, m0, rounds) in started.items():
            end = metrics(port, GAUGES)
            fb = "sidecar_ratelimit_fallback_total"
            best = max(rounds, key=lambda r: r["rps"])
            results[name] = {
                "rps": best["rps"],
                "p99_ms": best["p99_ms"],
                "p50_median_ms": statistics.median(r["p50_ms"] for r in rounds),
                "rps_median": statistics.median(r["rps"] for r in rounds),
                "p99_median_ms": statistics.median(r["p99_ms"] for r in rounds),
                "errors": sum(r["errors"] + r["mismatches"] for r in rounds),
                "fallbacks": end.get(fb, 0) - m0.get(fb, 0),
                "rounds": rounds,
            }
        slow = subprocess.run(["redis-cli", "-p", str(redis.port), "SLOWLOG", "LEN"], capture_output=True, text=True)
        results["slowlog_over_1ms"] = slow.stdout.strip()
    finally:
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            try:
                profiler.wait(timeout=30)
            except subprocess.TimeoutExpired:
                profiler.kill()
        for srv in servers:
            srv.stop()
        if redis is not None:
            redis.remove()
        shutil.rmtree(workdir, ignore_errors=True)

    print(
        f"\n{args.connections} connections, {args.keys:,} keys, {args.rounds} alternating rounds x {args.duration:g} s"
        + (f", paced at {args.rate:,.0f} req/s" if args.rate else ", saturating")
    )
    print(
        "| server | req/s (best) | req/s (median) | p50 ms (median) | p99 ms (best round) | p99 ms (median)"
        " | errors | fallbacks |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in ("memory", "redis", "memory-before", "redis-before"):
        if name in results:
            t = results[name]
            print(
                f"| {name} | {t['rps']:,.0f} | {t['rps_median']:,.0f} | {t['p50_median_ms']:.2f} | {t['p99_ms']:.2f}"
                f" | {t['p99_median_ms']:.2f} |"
                f" {t['errors']} | {t['fallbacks']:,.0f} |"
            )
    m = results["memory"]
    for name in ("redis", "redis-before"):
        if name in results:
            t = results[name]
            print(
                f"{name} / memory: {t['rps'] / m['rps']:.2f}x (medians {t['rps_median'] / m['rps_median']:.2f}x),"
                f" p99 {t['p99_ms']:.2f} vs {m['p99_ms']:.2f} ms"
            )
    print(f"script calls over 1 ms (SLOWLOG LEN): {results.get('slowlog_over_1ms')}")
    for name in ("memory", "redis"):
        if f"{name}-before" in results:
            t, b = results[name], results[f"{name}-before"]
            print(
                f"{name} / {name}-before: {t['rps'] / b['rps']:.2f}x"
                f" (medians {t['rps_median'] / b['rps_median']:.2f}x),"
                f" p99 {t['p99_ms']:.2f} vs {b['p99_ms']:.2f} ms (medians {t['p99_median_ms']:.2f} vs"
                f" {b['p99_median_ms']:.2f})"
            )
    if profiler is not None and os.path.exists(args.py_spy_out):
        print(f"\npy-spy profile of the Redis-backed server's rounds ({args.py_spy_out}):")
        print(profile_summary(args.py_spy_out, top=25))
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=1))
    return 1 if any(results[n]["errors"] for n in results if isinstance(results[n], dict)) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
