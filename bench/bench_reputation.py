"""The policy engine's decision with and without reputation, in one process: ratios per request.

Decides the same RCPT and END-OF-MESSAGE requests (one rate-limit rule, 1,000 senders) with
reputation off, on with no tenant above level 1 (the usual case), and on with 100 unrelated
tenants above level 1 (the level lookup then runs on every RCPT); rounds are interleaved and
the best of each is kept, so other load on a shared machine mostly cancels out.

    .venv/bin/python bench/bench_reputation.py --rounds 7 --requests 200000
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from sidecar.config import load_config  # noqa: E402
from sidecar.policy.engine import PolicyEngine  # noqa: E402
from sidecar.policy.limits import RateLimiter  # noqa: E402
from sidecar.reputation.live import LiveReputation  # noqa: E402
from sidecar.suppression.index import SuppressionIndex  # noqa: E402
from tests.harness.policy import rcpt  # noqa: E402

RULE = """
[[ratelimit.rules]]
name = "per-sender"
key = ["sender"]
limits = [{ rate = 1000000, per = "1m" }]
"""


def engines(tmp: Path) -> dict[str, PolicyEngine]:
    cfg_path = tmp / "bench-reputation.toml"
    cfg_path.write_text(RULE)
    cfg = load_config(cfg_path)

    def make(rep: LiveReputation | None) -> PolicyEngine:
        return PolicyEngine(cfg, SuppressionIndex(False, ()), RateLimiter(cfg.ratelimit.rules), reputation=rep)

    busy = LiveReputation("bench")
    busy.levels = {f"other{i}.test": 2 + i % 3 for i in range(100)}
    return {
        "reputation off": make(None),
        "on, all at level 1": make(LiveReputation("bench")),
        "on, 100 above": make(busy),
    }


def requests(n: int, state: str) -> list[dict[str, str]]:
    base = rcpt(sasl_username="", protocol_state=state, recipient_count="1" if state != "RCPT" else "0")
    return [{**base, "sender": f"app{i % 1000}@tenant{i % 1000}.test", "instance": f"i{i}"} for i in range(n)]


def timed(engine: PolicyEngine, reqs: list[dict[str, str]], now: float) -> float:
    decide = engine.decide
    t0 = time.perf_counter()
    for r in reqs:
        decide(r, now)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--requests", type=int, default=200000)
    args = ap.parse_args()
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        es = engines(Path(tmp))
    now = time.time()
    for state in ("RCPT", "END-OF-MESSAGE"):
        reqs = requests(args.requests, state)
        best = {name: float("inf") for name in es}
        for _ in range(args.rounds):
            for name, e in es.items():
                best[name] = min(best[name], timed(e, reqs, now))
                if e.reputation is not None:
                    e.reputation.take()  # what the sync job does every few seconds
        base = best["reputation off"]
        print(f"\n{state}: {args.requests:,} requests, best of {args.rounds} interleaved rounds")
        print("| engine | us per request | vs reputation off |")
        print("|---|---|---|")
        for name, s in best.items():
            print(f"| {name} | {s / args.requests * 1e6:.2f} | {s / base:.2f}x |")


if __name__ == "__main__":
    main()
