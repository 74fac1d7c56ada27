#!/usr/bin/env python3
"""Bounce ingestion through the pipe command, one process per message, as Postfix runs it.

Spawns ``.venv/bin/sidecar ingest ...`` per message with the message on stdin (the
environment pipe(8) gives: PATH, LANG=C, cwd elsewhere), ``--concurrency`` at a time, over
the bounce samples in tests/data/bounces (each made unique, so none is a duplicate).
Two runs: with a HandoffService listening (the normal case) and without it (in-process
fallback), each with the pipe commands compared in the same run: ``cli`` (``sidecar ingest``)
and ``thin`` (``python3 -I -S sidecar/bounce/pipe_entry.py``, the pipe(8) line
``sidecar postfix-config`` prints); ``fast`` (the fast path without the console script) on
request. Prints messages/s for each and thin/cli; the target is >= 120/s at concurrency 4.
``--mode lmtp`` delivers the same messages over LMTP instead (``ingest.lmtp``): ``--concurrency``
clients, each on one connection kept open for all its messages (as Postfix's lmtp client caches
them), one recipient per message, each answered after its commit; no process per message.
``--mode handoff,lmtp`` measures both in one run and prints lmtp / handoff.
Also the CPU each message cost: in the pipe processes (client), the service, and this bench's
own spawning, and what those add up to on all the machine's cores (the rate the CPU allows,
whatever else the machine is doing). ``--against DIR`` adds a run of the thin entry and the
service from another tree (e.g. ``git archive`` of an earlier commit), for before/after figures
from one run.

    .venv/bin/python bench/bench_ingest.py [--messages 300] [--concurrency 4] [--entry cli,thin]
        [--mode both|handoff|fallback|lmtp|handoff,lmtp] [--against /tmp/before]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIDECAR = ROOT / ".venv" / "bin" / "sidecar"
DATA = ROOT / "tests" / "data" / "bounces"

SERVICE = r"""
import sys
from twisted.internet import reactor
from twisted.python.threadpool import ThreadPool
from sidecar.config import load_config
from sidecar.store.db import make_engine, upgrade
from sidecar.bounce.handoff import HandoffService
cfg = load_config(sys.argv[1])
engine = make_engine(cfg.database.url)
upgrade(engine)
pool = ThreadPool(1, cfg.server.db_threads, "db")
pool.start()
svc = HandoffService(cfg, engine, reactor, pool)
services = [svc]
if getattr(cfg.ingest, "lmtp", ""):  # the LMTP listener, on the hand-off socket's group commit
    from sidecar.bounce.group import GroupCommit
    from sidecar.bounce.lmtp_service import LmtpService
    svc = HandoffService(cfg, engine, reactor, pool, group=GroupCommit(svc.recorder, reactor, pool))
    services = [svc, LmtpService(cfg, reactor, svc.group)]
reactor.callWhenRunning(lambda: ([s.startService() for s in services], print("ready", flush=True)))
reactor.addSystemEventTrigger("before", "shutdown", lambda: ([s.stopService() for s in services], pool.stop()))
reactor.run()
from sidecar import metrics
groups = getattr(metrics, "INGEST_GROUP_SIZE", None)  # group commit (absent from older trees)
if groups is not None:
    samples = {s.name: s.value for s in groups.collect()[0].samples}
    print("groups", int(samples["sidecar_ingest_group_size_count"]), int(samples["sidecar_ingest_group_size_sum"]))
"""


def samples(n: int) -> list[bytes]:
    files = sorted(DATA.glob("postfix/*.eml")) + sorted(DATA.glob("corpus/*.eml"))
    if not files:
        sys.exit(f"no samples under {DATA}")
    raws = [f.read_bytes() for f in files]
    return [f"X-Bench-Id: {i}\n".encode() + raws[i % len(raws)] for i in range(n)]


# The pipe command. "cli" is .venv/bin/sidecar as it is; "fast" is what it becomes with the
# proposed cli.main hook (argv[0] == "ingest" -> commands.ingest_main, no full argparse tree).
ENTRY = {
    "cli": [str(SIDECAR), "ingest"],
    "fast": [
        str(ROOT / ".venv/bin/python"),
        "-c",
        "import sys; from sidecar.cli.bounces import ingest_main; sys.exit(ingest_main(sys.argv[1:]))",
    ],
    "thin": [str(ROOT / ".venv/bin/python"), "-I", "-S", str(ROOT / "sidecar/bounce/pipe_entry.py")],
}
TARGET = 120.0  # messages/s through the pipe, service running, concurrency 4


def regular_install(work: Path) -> None:
    """A venv laid out like a regular (non-editable) install: plain sys.path entries for the
    project and its dependencies, no editable-install finder (which costs ~10 ms per start)."""
    venv = work / "venv"
    base = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((ROOT / ".venv/lib").glob("python3*/site-packages"))
    (next((venv / "lib").glob("python3*/site-packages")) / "project.pth").write_text(f"{ROOT}\n{site}\n")
    ENTRY["fast"][0] = str(venv / "bin/python")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def entry_command(entry: str, tree: Path | None) -> list[str]:
    if tree is None:
        return ENTRY[entry]
    if entry != "thin":
        sys.exit("--against compares the thin entry only")
    return [*ENTRY["thin"][:3], str(tree / "sidecar/bounce/pipe_entry.py")]


def run_pipe(
    cfg: Path, msgs: list[bytes], concurrency: int, cwd: str, entry: str = "cli", tree: Path | None = None
) -> tuple[float, dict[int, int]]:
    env = {"PATH": "/usr/bin:/bin", "LANG": "C"}
    # the --name=value form, as the pipe(8) line writes them
    cmd = [*entry_command(entry, tree), f"--config={cfg}", "--sender=MAILER-DAEMON"]
    cmd += ["--recipient=bounces@bounce.example"]
    cmd += ["--queue-id=BENCH", "--extension="]

    def one(raw: bytes) -> int:
        return subprocess.run(cmd, input=raw, capture_output=True, env=env, cwd=cwd).returncode

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as ex:
        codes = list(ex.map(one, msgs))
    elapsed = time.perf_counter() - t0
    counts: dict[int, int] = {}
    for c in codes:
        counts[c] = counts.get(c, 0) + 1
    return elapsed, counts


def run_lmtp(sock: Path, msgs: list[bytes], concurrency: int) -> tuple[float, dict[int, int]]:
    """``concurrency`` LMTP clients, each on one connection for its share of ``msgs``; the final
    reply's code per message (250 = recorded)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.harness.lmtp import LmtpClient

    def one_client(batch: list[bytes]) -> list[int]:
        client = LmtpClient(str(sock))
        try:
            return [int(client.deliver("", ["bounces@bounce.example"], raw)[0][:3]) for raw in batch]
        finally:
            client.close()

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as ex:
        results = list(ex.map(one_client, [msgs[i::concurrency] for i in range(concurrency)]))
    elapsed = time.perf_counter() - t0
    counts: dict[int, int] = {}
    for c in (code for codes in results for code in codes):
        counts[c] = counts.get(c, 0) + 1
    return elapsed, counts


def cpu_ms(usage: resource.struct_rusage) -> float:
    return (usage.ru_utime + usage.ru_stime) * 1000


def bench(mode: str, n: int, concurrency: int, work: Path, entry: str, tree: Path | None = None) -> float:
    label = entry if tree is None else f"{entry}@{tree.name}"
    d = work / f"{mode}-{label}"
    d.mkdir(parents=True)
    db, sock = d / "sidecar.db", d / "ingest.sock"
    cfg = d / "sidecar.toml"
    lmtp = f'lmtp = "{d / "lmtp.sock"}"\n' if mode == "lmtp" else ""
    cfg.write_text(f'[database]\nurl = "sqlite:///{db}"\n[ingest]\nsocket = "{sock}"\n{lmtp}')
    proc = None
    if mode in ("handoff", "lmtp"):
        script = d / "service.py"
        script.write_text(SERVICE)
        env = dict(os.environ, PYTHONPATH=str(tree)) if tree is not None else None
        proc = subprocess.Popen([sys.executable, str(script), str(cfg)], stdout=subprocess.PIPE, env=env)
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    else:
        subprocess.run([str(SIDECAR), "db", "upgrade", "--config", str(cfg)], check=True, capture_output=True)
    try:
        if mode == "lmtp":
            run_lmtp(d / "lmtp.sock", samples(10), concurrency)  # warm up
        else:
            run_pipe(cfg, samples(10), concurrency, str(work), entry, tree)  # warm the page cache
        cpu0 = cpu_seconds(proc.pid) if proc is not None else 0.0
        kids0, self0 = resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF)
        if mode == "lmtp":
            elapsed, codes = run_lmtp(d / "lmtp.sock", samples(n + 10)[10:], concurrency)
        else:
            elapsed, codes = run_pipe(cfg, samples(n + 10)[10:], concurrency, str(work), entry, tree)
        kids1, self1 = resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF)
        service_ms = (cpu_seconds(proc.pid) - cpu0) / n * 1000 if proc is not None else 0.0
    finally:
        groups = ""
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=10)
            words = out.decode().split()
            if words[:1] == ["groups"] and int(words[1]):
                groups = f", {int(words[2]) / int(words[1]):.2f} messages per transaction"
    client_ms = (cpu_ms(kids1) - cpu_ms(kids0)) / n
    spawn_ms = (cpu_ms(self1) - cpu_ms(self0)) / n
    with sqlite3.connect(db) as c:
        stored = c.execute("select count(*) from raw_messages").fetchone()[0]
    rate = n / elapsed
    total = client_ms + service_ms + spawn_ms
    print(
        f"{mode:<9} entry={label:<4} {n} messages, concurrency {concurrency}: {elapsed:6.2f} s  "
        f"{rate:6.1f} messages/s  {'replies' if mode == 'lmtp' else 'exit codes'} {codes}\n"
        f"          stored {stored}  load average {os.getloadavg()[0]:.1f}\n"
        f"          CPU per message: client {client_ms:.1f} ms, service {service_ms:.1f} ms, bench {spawn_ms:.1f} ms"
        f" = {total:.1f} ms: {os.cpu_count() or 1} cores allow {(os.cpu_count() or 1) * 1000 / total:.0f} messages/s"
        + groups,
        flush=True,
    )
    return rate


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=300)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument(
        "--mode",
        default="both",
        help="comma-separated: handoff (pipe command, service running), fallback (pipe command, no "
        "service), lmtp (LMTP clients on cached connections, service running); both = handoff,fallback",
    )
    ap.add_argument(
        "--entry",
        default="cli,thin",
        help="pipe commands to compare, comma-separated: cli (sidecar ingest), fast (its fast path "
        "without the console script), thin (python3 -I -S pipe_entry.py); default cli,thin",
    )
    ap.add_argument(
        "--regular-install",
        action="store_true",
        help="run the fast entry from a venv laid out like a non-editable install",
    )
    ap.add_argument(
        "--against",
        type=Path,
        help="also run the thin entry and the service from this tree (a `git archive` of another commit)",
    )
    ap.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="repeat the cases, in reverse order every other round (a machine whose load drifts then "
        "favours none of them); the ratios are printed round by round",
    )
    args = ap.parse_args()
    print(
        f"# {platform.node()} {platform.machine()} {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d')}"
    )
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    os.chmod(work, 0o755)
    try:
        if args.regular_install:
            regular_install(work)
        modes = ["handoff", "fallback"] if args.mode == "both" else [m for m in args.mode.split(",") if m]
        if not modes or set(modes) - {"handoff", "fallback", "lmtp"}:
            ap.error("--mode: both, or handoff, fallback and/or lmtp")
        entries = [e for e in args.entry.split(",") if e]
        if not entries or set(entries) - set(ENTRY):
            ap.error(f"--entry: choose from {', '.join(ENTRY)}")
        cases = (["before"] if args.against is not None else []) + entries
        plan = [(m, e) for m in modes for e in (["lmtp"] if m == "lmtp" else cases)]
        rounds: list[dict[tuple[str, str], float]] = []
        for r in range(args.rounds):
            rates: dict[tuple[str, str], float] = {}
            for m, e in plan if r % 2 == 0 else plan[::-1]:
                n = args.messages if m != "fallback" else max(args.messages // 5, 20)
                tree = args.against.resolve() if e == "before" else None
                rates[(m, e)] = bench(m, n, args.concurrency, work / f"r{r}", "thin" if tree else e, tree)
            rounds.append(rates)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    best = {key: max(rates[key] for rates in rounds) for key in rounds[0]}
    for (m, e), rate in best.items():
        if m in ("handoff", "lmtp") and e != "before":
            print(
                f"target >= {TARGET:.0f} messages/s through the pipe (service running, entry {e}): "
                f"{'met' if rate >= TARGET else 'NOT met'} (best {rate:.1f})"
            )
    if ("lmtp", "lmtp") in best:
        for e in entries:
            if ("handoff", e) in best:
                ratios = ", ".join(f"{rates[('lmtp', 'lmtp')] / rates[('handoff', e)]:.2f}x" for rates in rounds)
                print(f"lmtp / handoff {e}: {ratios} (round by round, each pair from the same round)")
    for m in modes:
        for a, b, name in (
            ("thin", "cli", "thin / cli"),
            ("thin", "before", f"thin / thin@{args.against and args.against.name}"),
        ):
            if (m, a) in best and (m, b) in best:
                ratios = ", ".join(f"{rates[(m, a)] / rates[(m, b)]:.2f}x" for rates in rounds)
                print(f"{m}: {name} = {ratios} (round by round, each pair from the same round)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
