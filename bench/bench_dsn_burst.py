#!/usr/bin/env python3
"""A burst of DSNs through a real Postfix and the sidecar-bounce pipe, end to end.

Runs the integration test ``test_faults.py::test_d_burst_of_dsns_through_the_pipe`` (a
private Postfix instance, ``sidecar serve``, pipe(8) running ``sidecar ingest`` as
``nobody``) with ``SIDECAR_DSN_BURST=COUNT``: COUNT Postfix-style DSNs are injected over
SMTP (4 sessions) to the bounce address, each goes through the pipe, and the clock stops
when all are recorded and Postfix's queue is empty. Prints messages, seconds, messages/s,
the machine and the date (the figures for docs/postfix.md "Fault tolerance"). ``--entries lmtp``
runs ``test_lmtp_postfix.py::test_burst_of_dsns_through_lmtp`` instead: the same burst delivered
by Postfix's lmtp(8) client to the service's LMTP listener (``ingest.lmtp``), no process per DSN;
``--entries thin,lmtp`` compares the two in one run.

Needs what the integration tests need: root and an installed Postfix.

    .venv/bin/python bench/bench_dsn_burst.py [--count 1000] [--rounds 1] [--entries thin,cli]
        [--maxproc 8,16]   (--entries: thin, cli, lmtp)
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST = "tests/integration/postfix/test_faults.py::test_d_burst_of_dsns_through_the_pipe"
LMTP_TEST = "tests/integration/postfix/test_lmtp_postfix.py::test_burst_of_dsns_through_lmtp"
FIGURE = re.compile(
    r"d: (\d+) DSNs: injected over SMTP in ([\d.]+) s, all recorded after ([\d.]+) s, "
    r"queue empty after ([\d.]+) s = ([\d.]+) messages/s \(deferred on the way: (\d+)\)"
)


def machine() -> str:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu or 'unknown CPU'}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def one_round(count: int, entry: str = "thin", maxproc: str = "") -> dict[str, float]:
    env = dict(os.environ, SIDECAR_DSN_BURST=str(count), SIDECAR_DSN_BURST_PIPE=entry)
    if maxproc:
        env["SIDECAR_DSN_BURST_MAXPROC"] = maxproc
    test = LMTP_TEST if entry == "lmtp" else TEST
    cmd = [sys.executable, "-m", "pytest", "-m", "postfix", test, "-s", "-q", "-p", "no:cacheprovider"]
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    m = FIGURE.search(result.stdout)
    if result.returncode != 0 or m is None:
        sys.exit(f"the burst test failed (exit {result.returncode}):\n{result.stdout[-4000:]}{result.stderr[-2000:]}")
    n, inject, recorded, empty, rate, deferred = m.groups()
    return {
        "messages": int(n),
        "inject": float(inject),
        "recorded": float(recorded),
        "seconds": float(empty),
        "rate": float(rate),
        "deferred": int(deferred),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=1000, help="DSNs in the burst (default 1000)")
    ap.add_argument("--rounds", type=int, default=1, help="repeat the whole test this many times")
    ap.add_argument(
        "--entries",
        default="thin",
        help="pipe commands, alternating within each round: thin (the line `sidecar postfix-config` prints), "
        "cli (`sidecar ingest`), lmtp (Postfix's lmtp client into the service, ingest.lmtp); default thin",
    )
    ap.add_argument(
        "--maxproc",
        default="",
        help="process limits of the sidecar-bounce (or, for lmtp, sidecar-lmtp) service to alternate, "
        "comma-separated (default: the template's)",
    )
    args = ap.parse_args()
    entries = [e for e in args.entries.split(",") if e]
    if not entries or set(entries) - {"thin", "cli", "lmtp"}:
        ap.error("--entries: thin, cli and/or lmtp")
    limits = [m for m in args.maxproc.split(",") if m] or [""]
    print(f"machine: {machine()}")
    print(f"date:    {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    for test in sorted({LMTP_TEST if e == "lmtp" else TEST for e in entries}):
        print(f"command: SIDECAR_DSN_BURST={args.count} .venv/bin/python -m pytest -m postfix {test} -s")
    rates: dict[str, list[float]] = {}
    for r in range(args.rounds):
        for entry in entries:
            for maxproc in limits:
                case = entry + (f" maxproc={maxproc}" if maxproc else "")
                rates.setdefault(case, []).append(report(r, case, args.count, entry, maxproc))
    for case, values in rates.items():
        print(f"{case}: {', '.join(f'{v:.1f}' for v in values)} messages/s")
    if len(rates) > 1:
        first, *others = rates
        for case in others:
            ratios = [b / a for a, b in zip(rates[first], rates[case], strict=True)]
            print(f"{case} / {first}: {', '.join(f'{x:.2f}x' for x in ratios)} (round by round)")


def report(r: int, case: str, count: int, entry: str, maxproc: str) -> float:
    t0 = time.monotonic()
    load_before = os.getloadavg()[0]
    f = one_round(count, entry, maxproc)
    print(
        f"round {r + 1} [{case}]: {f['messages']} DSNs, injected in {f['inject']:.2f} s, recorded after "
        f"{f['recorded']:.2f} s, queue empty after {f['seconds']:.2f} s = {f['rate']:.1f} messages/s "
        f"(deferred on the way: {f['deferred']}; whole test incl. lab start/stop {time.monotonic() - t0:.1f} s; "
        f"load average before/after {load_before:.1f}/{os.getloadavg()[0]:.1f})",
        flush=True,
    )
    return f["rate"]


if __name__ == "__main__":
    main()
