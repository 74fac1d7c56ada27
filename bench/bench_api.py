"""Management API benchmark: CSV export of N suppressions and filtered list pages, through the API.

    .venv/bin/python bench/bench_api.py [--rows 1000000] [--calls 200] [--keep DIR]

Seeds N suppressions (SuppressionStore.import_rows, the path `sidecar suppressions import`
takes), starts `sidecar serve` (tests.harness.api.ApiServer) with its HTTP listener
on loopback and a real SQLite file, then measures:

* export: GET /suppressions/export (CSV) streamed to /dev/null: wall time, rows, MB, and the
  server's peak RSS sampled from /proc/PID/status every 20 ms during the export;
* list: GET /suppressions?...&limit=100 with several filters, ``--calls`` times each on a
  keep-alive connection: p50 / p99 latency.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sidecar.store.db import make_engine, upgrade  # noqa: E402
from sidecar.suppression.store import SuppressionStore  # noqa: E402
from tests.harness.api import ApiServer  # noqa: E402

TOKEN = "bench-token"
REASONS = ("hard bounce", "complaint", "soft bounces", "manual")
CATEGORIES = ("invalid-recipient", "mailbox-full", "complaint", "dns", None)


def seed(db: str, n: int) -> float:
    engine = make_engine(db)
    upgrade(engine)
    now = time.time()

    def rows():
        for i in range(n):
            yield {
                "address": f"user{i:07d}@d{i % 997}.example",
                "tenant": f"t{i % 50}" if i % 3 else "",
                "reason": REASONS[i % 4],
                "category": CATEGORIES[i % 5] or "",
                "created_at": str(now - 86400 * 365 + i * (86400 * 365 / n)),
            }

    t0 = time.monotonic()
    SuppressionStore(engine).import_rows(rows(), batch=20000)
    return time.monotonic() - t0


def rss_kb(pid: int, key: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def export(server: ApiServer) -> dict[str, float]:
    pid = server.proc.pid
    peak, stop = [rss_kb(pid)], threading.Event()
    before = peak[0]

    def sample() -> None:
        while not stop.is_set():
            peak.append(rss_kb(pid))
            time.sleep(0.02)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=120)
    t0 = time.monotonic()
    conn.request("GET", "/suppressions/export?format=csv", headers={"Authorization": f"Bearer {TOKEN}"})
    resp = conn.getresponse()
    size = lines = 0
    first = None
    while True:
        chunk = resp.read(1 << 16)
        if not chunk:
            break
        if first is None:
            first = time.monotonic() - t0
        size += len(chunk)
        lines += chunk.count(b"\n")
    elapsed = time.monotonic() - t0
    stop.set()
    t.join()
    return {
        "seconds": elapsed,
        "first_byte_s": first or 0.0,
        "rows": lines - 1,
        "mb": size / 1e6,
        "rss_before_mb": before / 1024,
        "rss_peak_mb": max(peak) / 1024,
        "status": resp.status,
    }


def listing(server: ApiServer, calls: int) -> dict[str, dict[str, float]]:
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
    h = {"Authorization": f"Bearer {TOKEN}"}
    since = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 86400 * 90))
    cases = {
        "reason+tenant": "reason=complaint&tenant=t7",
        "category+since": f"category=mailbox-full&since={since}",
        "prefix": "prefix=user05",
        "tenant+reason+category": "tenant=t14&reason=hard%20bounce&category=dns",
        "no match (t13+hard+dns)": "tenant=t13&reason=hard%20bounce&category=dns",
        "no filter, deep cursor": "active=true",
    }
    out = {}
    for name, qs in cases.items():
        times, cursor = [], "900000" if name.startswith("no filter") else ""
        for _ in range(calls):
            t0 = time.perf_counter()
            conn.request("GET", f"/suppressions?{qs}&limit=100" + (f"&cursor={cursor}" if cursor else ""), headers=h)
            r = conn.getresponse()
            body = json.loads(r.read())
            times.append((time.perf_counter() - t0) * 1000)
            assert r.status == 200, body
            cursor = body["next_cursor"] or ""  # walk forward through the result
        times.sort()
        out[name] = {
            "p50_ms": statistics.median(times),
            "p99_ms": times[int(len(times) * 0.99) - 1],
            "items": len(body["items"]),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--keep", help="reuse/keep the database in this directory")
    args = ap.parse_args()
    tmp = Path(args.keep or tempfile.mkdtemp(prefix="bench-api-"))
    tmp.mkdir(parents=True, exist_ok=True)
    db = f"sqlite:///{tmp}/sidecar.db"
    if not (tmp / "sidecar.db").exists():
        print(f"seeding {args.rows:,} suppressions ...", flush=True)
        print(f"  seeded in {seed(db, args.rows):.1f}s", flush=True)
    server = ApiServer(tmp, f'[[api.tokens]]\ntoken = "{TOKEN}"\nscope = "read"\n', db=db).start()
    try:
        cpu = next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor(),
        )
        print(
            f"machine: {os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}, SQLite, "
            f"{time.strftime('%Y-%m-%d')}"
        )
        e = export(server)
        print(
            f"export CSV: {e['rows']:,} rows, {e['mb']:.0f} MB in {e['seconds']:.1f}s "
            f"({e['rows'] / e['seconds']:,.0f} rows/s, first byte {e['first_byte_s'] * 1000:.0f} ms); "
            f"server RSS {e['rss_before_mb']:.0f} MB before, peak {e['rss_peak_mb']:.0f} MB during"
        )
        for name, r in listing(server, args.calls).items():
            print(
                f"list page of 100, {name:24}: p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms ({args.calls} calls)"
            )
    finally:
        server.stop()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
