"""Load generator for a Postfix policy server (SMTPD_POLICY_README protocol).

Speaks the protocol the way Postfix smtpd does: N persistent connections, one
outstanding request per connection, the full Postfix 3.7 attribute set at RCPT.
Senders and recipients are Zipf-distributed; a set fraction of recipients is
drawn from the suppressed set (addresses made by ``suppressed_address(i)``), so
that replies can be checked: ``action=550...`` for those, ``action=DUNNO`` for
the rest (``--expect policy``). Every reply is checked for framing: exactly one
``action=...`` line followed by an empty line.

Bounded: stops after ``--requests`` and/or ``--duration``. Loopback targets only.

    python bench/policy_load.py --port 10031 --duration 10 --expect policy
"""

from __future__ import annotations

import argparse
import bisect
import errno
import heapq
import ipaddress
import itertools
import json
import math
import multiprocessing
import random
import selectors
import socket
import sys
import time
from array import array
from dataclasses import dataclass, field

# Attribute names and order of a RCPT request from Postfix 3.7.11 (smtpd_access_policy),
# as captured in the project's fixtures. Values are typical of a submission client.
RCPT_ATTRIBUTES: tuple[tuple[str, str | None], ...] = (
    ("request", "smtpd_access_policy"),
    ("protocol_state", "RCPT"),
    ("protocol_name", "ESMTP"),
    ("client_address", "127.0.0.1"),
    ("client_name", "unknown"),
    ("client_port", "54520"),
    ("reverse_client_name", "unknown"),
    ("server_address", "127.0.0.1"),
    ("server_port", "10025"),
    ("helo_name", "client.lab.test"),
    ("sender", None),  # filled per request
    ("recipient", None),  # filled per request
    ("recipient_count", "0"),
    ("queue_id", ""),
    ("instance", "1644.6b0a4adf.b1e75.0"),
    ("size", "0"),
    ("etrn_domain", ""),
    ("stress", ""),
    ("sasl_method", ""),
    ("sasl_username", ""),
    ("sasl_sender", ""),
    ("ccert_subject", ""),
    ("ccert_issuer", ""),
    ("ccert_fingerprint", ""),
    ("ccert_pubkey_fingerprint", ""),
    ("encryption_protocol", ""),
    ("encryption_cipher", ""),
    ("encryption_keysize", "0"),
    ("policy_context", ""),
)

EXPECT_NONE, EXPECT_DUNNO, EXPECT_POLICY = "none", "dunno", "policy"
SUPPRESSED_PREFIX = b"action=550"
DUNNO_REPLY = b"action=DUNNO\n\n"


def suppressed_address(i: int) -> str:
    """The i-th suppressed address; the bench seeds the store with i in range(N)."""
    return f"gone{i}@d{i % 997}.suppressed.test"


def clean_address(i: int) -> str:
    return f"user{i}@d{i % 991}.example.test"


def sender_address(i: int) -> str:
    return f"app{i}@t{i % 101}.sender.test"


class ZipfSampler:
    """Draws 0..n-1 with P(k) proportional to 1/(k+1)**s, by bisect over cumulative weights."""

    def __init__(self, n: int, s: float, rng: random.Random) -> None:
        total = 0.0
        cum = array("d")
        for k in range(1, n + 1):
            total += k**-s
            cum.append(total)
        self._cum = cum
        self._total = total
        self._rand = rng.random
        self._n = n

    def __call__(self) -> int:
        k = bisect.bisect_left(self._cum, self._rand() * self._total)
        return k if k < self._n else self._n - 1


@dataclass
class Workload:
    senders: int = 100_000
    recipients: int = 200_000
    suppressed: int = 1_000_000
    suppressed_fraction: float = 0.1
    zipf_s: float = 1.1
    seed: int = 1


class RequestSource:
    """Pre-encoded request pieces; one request is four bytes objects joined."""

    def __init__(self, w: Workload, rng: random.Random) -> None:
        lines = [f"{k}={v}\n".encode() for k, v in RCPT_ATTRIBUTES if v is not None]
        names = [k for k, _ in RCPT_ATTRIBUTES]
        i_sender = names.index("sender")
        self.head = b"".join(lines[:i_sender])
        self.tail = b"".join(lines[i_sender:]) + b"\n"
        self.senders = [f"sender={sender_address(i)}\n".encode() for i in range(w.senders)]
        self.clean = [f"recipient={clean_address(i)}\n".encode() for i in range(w.recipients)]
        self._sup_cache: dict[int, bytes] = {}
        self.n_suppressed = w.suppressed
        self.fraction = w.suppressed_fraction if w.suppressed > 0 else 0.0
        self.pick_sender = ZipfSampler(w.senders, w.zipf_s, rng)
        self.pick_clean = ZipfSampler(w.recipients, w.zipf_s, rng)
        # Suppressed recipients: Zipf over the suppressed index (low indexes are popular).
        self.pick_sup = ZipfSampler(max(1, w.suppressed), w.zipf_s, rng) if self.fraction else None
        self._rand = rng.random

    def suppressed_line(self, i: int) -> bytes:
        line = self._sup_cache.get(i)
        if line is None:
            line = self._sup_cache[i] = f"recipient={suppressed_address(i)}\n".encode()
        return line

    def next(self) -> tuple[bytes, bool]:
        """Return (request bytes, recipient is suppressed)."""
        if self.pick_sup is not None and self._rand() < self.fraction:
            rcpt = self.suppressed_line(self.pick_sup())
            sup = True
        else:
            rcpt = self.clean[self.pick_clean()]
            sup = False
        return b"".join((self.head, self.senders[self.pick_sender()], rcpt, self.tail)), sup

    def warmup(self, senders: int) -> list[bytes]:
        """One request per sender (clean recipient): makes every rate-limit key active."""
        return [b"".join((self.head, s, self.clean[0], self.tail)) for s in self.senders[:senders]]


@dataclass
class Result:
    requests: int = 0
    errors: int = 0
    mismatches: int = 0
    elapsed: float = 0.0
    latencies_ns: array = field(default_factory=lambda: array("q"))
    samples: list[str] = field(default_factory=list)  # a few error / mismatch descriptions

    def note(self, text: str) -> None:
        if len(self.samples) < 10:
            self.samples.append(text)


def check_loopback(host: str) -> str:
    addr = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)[0][4][0]
    if not ipaddress.ip_address(addr).is_loopback:
        raise SystemExit(f"refusing non-loopback target {host} ({addr})")
    return addr


class _Conn:
    __slots__ = ("buf", "fd", "sent_at", "sock", "suppressed")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.buf = b""
        self.sent_at = 0
        self.suppressed = False


def _connect(addr: str, port: int) -> socket.socket:
    sock = socket.create_connection((addr, port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setblocking(False)
    return sock


def run_load(
    addr: str,
    port: int,
    connections: int,
    source: RequestSource | None,
    *,
    requests: int = 0,
    duration: float = 0.0,
    expect: str = EXPECT_NONE,
    fixed: list[bytes] | None = None,
    timeout: float = 10.0,
    rate: float = 0.0,
) -> Result:
    """Drive `connections` persistent connections from one selector loop.

    Either `source` (random workload) or `fixed` (send each request once, e.g. warm-up).
    With ``rate`` (requests per second over all connections) the load is paced: each connection
    sends on its own schedule, one request every ``connections / rate`` seconds, still one
    outstanding request at a time; a request whose slot came while its connection still waited
    for a reply goes as soon as the reply arrives, and its latency counts from its slot (so a
    slow server is not hidden by the generator waiting for it: no coordinated omission).
    """
    res = Result()
    lat = res.latencies_ns
    sel = selectors.DefaultSelector()
    conns: dict[int, _Conn] = {}
    fixed_iter = iter(fixed) if fixed is not None else None
    if fixed is not None:
        requests = len(fixed)
    remaining = requests if requests > 0 else -1
    perf = time.perf_counter_ns
    deadline = time.monotonic() + duration if duration > 0 else None
    check_expect = expect != EXPECT_NONE
    policy = expect == EXPECT_POLICY

    interval = int(connections / rate * 1e9) if rate > 0 else 0
    due: list[tuple[int, int]] = []  # paced: (slot in ns, fd) of connections waiting for their slot
    slots: dict[int, int] = {}  # paced: fd -> the slot of its next request

    def send_next(c: _Conn) -> bool:
        nonlocal remaining
        if interval:
            slot = slots[c.fd]
            slots[c.fd] = slot + interval
            if slot > perf():
                heapq.heappush(due, (slot, c.fd))
                return True
            return send_now(c, slot)
        return send_now(c, perf())

    def send_now(c: _Conn, slot: int) -> bool:
        nonlocal remaining
        if remaining == 0:
            return False
        if fixed_iter is not None:
            data = next(fixed_iter, None)
            if data is None:
                return False
            sup = False
        else:
            data, sup = source.next()  # type: ignore[union-attr]
        remaining -= 1
        c.suppressed = sup
        c.buf = b""
        c.sent_at = slot
        try:
            n = c.sock.send(data)
        except BlockingIOError:
            n = 0
        if n != len(data):  # requests are < 1 KiB; a short write here means trouble
            c.sock.setblocking(True)
            c.sock.sendall(data[n:])
            c.sock.setblocking(False)
        return True

    def drop(c: _Conn) -> None:
        sel.unregister(c.sock)
        del conns[c.fd]
        c.sock.close()

    def reopen() -> None:
        try:
            c = _Conn(_connect(addr, port))
        except OSError as exc:
            res.errors += 1
            res.note(f"connect: {exc}")
            return
        conns[c.fd] = c
        slots[c.fd] = perf()
        sel.register(c.sock, selectors.EVENT_READ, c)
        if not send_next(c):
            drop(c)

    for _ in range(connections):
        c = _Conn(_connect(addr, port))
        conns[c.fd] = c
        sel.register(c.sock, selectors.EVENT_READ, c)
    start = time.monotonic()
    t0 = perf()
    for i, fd in enumerate(conns):  # first slots spread over one interval
        slots[fd] = t0 + interval * i // max(1, connections)
    for c in list(conns.values()):
        if not send_next(c):
            drop(c)

    done_sending = False
    checked = 0
    while conns:
        wait = 1.0
        if due:
            now_ns = perf()
            while due and due[0][0] <= now_ns:
                slot, fd = heapq.heappop(due)
                c = conns.get(fd)
                if c is not None and (done_sending or not send_now(c, slot)):
                    done_sending = done_sending or remaining == 0
                    drop(c)
            if due:
                wait = max(0.0, (due[0][0] - perf()) / 1e9)
        if not conns:
            break
        events = sel.select(wait)
        now_ns = perf()
        if not events and due:
            if deadline is not None and time.monotonic() >= deadline:
                done_sending = True
            continue
        if not events:
            stale = [c for c in conns.values() if now_ns - c.sent_at > timeout * 1e9]
            for c in stale:
                res.errors += 1
                res.note("timeout waiting for reply")
                drop(c)
            continue
        for key, _ in events:
            c = key.data
            try:
                chunk = c.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as exc:
                chunk = b""
                res.note(f"recv: {exc}")
            if not chunk:
                res.errors += 1
                if len(res.samples) < 10:
                    res.note(f"connection closed by server (buffer {c.buf!r})")
                drop(c)
                if not done_sending:
                    reopen()
                continue
            buf = c.buf + chunk if c.buf else chunk
            if not buf.endswith(b"\n\n"):
                c.buf = buf
                continue
            lat.append(now_ns - c.sent_at)
            res.requests += 1
            # Exactly one line `action=...` then an empty line.
            if buf.find(b"\n") != len(buf) - 2 or not buf.startswith(b"action="):
                res.errors += 1
                res.note(f"bad reply framing: {buf[:200]!r}")
            elif check_expect:
                if policy and c.suppressed:
                    ok = buf.startswith(SUPPRESSED_PREFIX)
                else:
                    ok = buf == DUNNO_REPLY
                if not ok:
                    res.mismatches += 1
                    res.note(f"mismatch (suppressed={c.suppressed}): {buf[:200]!r}")
            if not done_sending:
                checked += 1
                if deadline is not None and checked >= 256:
                    checked = 0
                    if time.monotonic() >= deadline:
                        done_sending = True
            if done_sending or not send_next(c):
                done_sending = done_sending or remaining == 0
                drop(c)
    res.elapsed = time.monotonic() - start
    sel.close()
    return res


def percentile(sorted_vals: array | list, p: float) -> float:
    if not sorted_vals:
        return float("nan")
    k = min(len(sorted_vals) - 1, max(0, math.ceil(p / 100.0 * len(sorted_vals)) - 1))  # nearest rank
    return sorted_vals[k]


def summarize(results: list[Result]) -> dict:
    lat = sorted(itertools.chain.from_iterable(r.latencies_ns for r in results))
    n = sum(r.requests for r in results)
    elapsed = max((r.elapsed for r in results), default=0.0)
    samples = [s for r in results for s in r.samples][:10]
    return {
        "requests": n,
        "elapsed_s": round(elapsed, 3),
        "rps": round(n / elapsed, 1) if elapsed else 0.0,
        "p50_ms": round(percentile(lat, 50) / 1e6, 3),
        "p99_ms": round(percentile(lat, 99) / 1e6, 3),
        "p999_ms": round(percentile(lat, 99.9) / 1e6, 3),
        "max_ms": round(lat[-1] / 1e6, 3) if lat else float("nan"),
        "errors": sum(r.errors for r in results),
        "mismatches": sum(r.mismatches for r in results),
        "samples": samples,
    }


def _workload(args: argparse.Namespace) -> Workload:
    return Workload(
        senders=args.senders,
        recipients=args.recipients,
        suppressed=args.suppressed,
        suppressed_fraction=args.suppressed_fraction,
        zipf_s=args.zipf,
        seed=args.seed,
    )


def _worker(args: argparse.Namespace, index: int, conns: int, requests: int, q, go) -> None:
    w = _workload(args)
    src = RequestSource(w, random.Random(w.seed * 1000 + index))
    q.put(("ready", index))
    go.get()  # start together, once every worker has built its workload
    res = run_load(
        args.addr,
        args.port,
        conns,
        src,
        requests=requests,
        duration=args.duration,
        expect=args.expect,
        timeout=args.timeout,
        rate=args.rate / args.procs,
    )
    q.put(
        ("done", index, res.requests, res.errors, res.mismatches, res.elapsed, res.latencies_ns.tobytes(), res.samples)
    )


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def run_procs(args: argparse.Namespace) -> dict:
    """Spread connections over --procs worker processes (fork)."""
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    q_go = [ctx.Queue() for _ in range(args.procs)]
    conns = _split(args.connections, args.procs)
    reqs = _split(args.requests, args.procs) if args.requests else [0] * args.procs
    procs = [
        ctx.Process(target=_worker, args=(args, i, conns[i], reqs[i], q, q_go[i]), daemon=True)
        for i in range(args.procs)
    ]
    for p in procs:
        p.start()
    for _ in procs:
        q.get(timeout=120)
    for g in q_go:
        g.put("go")
    results = []
    wait = (args.duration or 3600) + args.timeout + 60
    for _ in procs:
        msg = q.get(timeout=wait)
        r = Result(requests=msg[2], errors=msg[3], mismatches=msg[4], elapsed=msg[5], samples=msg[7])
        r.latencies_ns.frombytes(msg[6])
        results.append(r)
    for p in procs:
        p.join(timeout=10)
        if p.is_alive():
            p.kill()
    return summarize(results)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1", help="loopback address only")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--connections", "-c", type=int, default=50)
    p.add_argument("--requests", "-n", type=int, default=0, help="total requests (0: no limit)")
    p.add_argument("--duration", "-d", type=float, default=0.0, help="seconds (0: no limit)")
    p.add_argument("--procs", type=int, default=1, help="worker processes")
    p.add_argument("--senders", type=int, default=100_000)
    p.add_argument("--recipients", type=int, default=200_000, help="distinct clean recipients")
    p.add_argument(
        "--suppressed", type=int, default=1_000_000, help="size of the suppressed set the server was seeded with"
    )
    p.add_argument("--suppressed-fraction", type=float, default=0.1)
    p.add_argument("--zipf", type=float, default=1.1, help="Zipf exponent s")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--expect",
        choices=(EXPECT_NONE, EXPECT_DUNNO, EXPECT_POLICY),
        default=EXPECT_NONE,
        help="policy: 550 for suppressed recipients, DUNNO otherwise",
    )
    p.add_argument(
        "--warmup", action="store_true", help="first send one untimed request per sender (activates every key)"
    )
    p.add_argument("--warmup-only", action="store_true", help="the warm-up pass, then exit")
    p.add_argument("--timeout", type=float, default=10.0, help="per-reply timeout, seconds")
    p.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="paced load: requests per second over all connections, latency counted from each request's "
        "slot (0: each connection sends its next request as soon as the reply came, the saturating load)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.requests <= 0 and args.duration <= 0:
        args.duration = 10.0
    if args.duration > 3600 or args.requests > 100_000_000:
        raise SystemExit("bounded runs only: --duration <= 3600, --requests <= 1e8")
    args.addr = check_loopback(args.host)
    out: dict = {}
    bad = 0
    if args.warmup or args.warmup_only:
        src = RequestSource(_workload(args), random.Random(args.seed))
        t0 = time.monotonic()
        wres = run_load(
            args.addr,
            args.port,
            args.connections,
            None,
            fixed=src.warmup(args.senders),
            timeout=args.timeout,
            expect=EXPECT_NONE if args.expect == EXPECT_NONE else EXPECT_DUNNO,
        )
        out["warmup"] = {
            "requests": wres.requests,
            "errors": wres.errors,
            "mismatches": wres.mismatches,
            "samples": wres.samples,
            "seconds": round(time.monotonic() - t0, 2),
        }
        bad += wres.errors + wres.mismatches
        del src
    if not args.warmup_only:
        if args.procs > 1:
            out.update(run_procs(args))
        else:
            src = RequestSource(_workload(args), random.Random(args.seed))
            res = run_load(
                args.addr,
                args.port,
                args.connections,
                src,
                requests=args.requests,
                duration=args.duration,
                expect=args.expect,
                timeout=args.timeout,
                rate=args.rate,
            )
            out.update(summarize([res]))
        bad += out["errors"] + out["mismatches"]
    if args.json:
        print(json.dumps(out))
        return 1 if bad else 0
    if "warmup" in out:
        wu = out["warmup"]
        print(
            f"warm-up: {wu['requests']} requests in {wu['seconds']} s, "
            f"{wu['errors']} errors, {wu['mismatches']} mismatches"
        )
        for s in wu["samples"]:
            print("  " + s)
    if "requests" in out:
        print(f"requests {out['requests']} in {out['elapsed_s']} s: {out['rps']:.0f} req/s")
        print(
            f"latency ms: p50 {out['p50_ms']:.3f}  p99 {out['p99_ms']:.3f}  "
            f"p99.9 {out['p999_ms']:.3f}  max {out['max_ms']:.3f}"
        )
        print(f"errors {out['errors']}  mismatches {out['mismatches']}")
        for s in out["samples"]:
            print("  " + s)
    return 1 if bad else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
    except OSError as exc:
        if exc.errno == errno.ECONNREFUSED:
            sys.exit(f"connection refused: {exc}")
        raise
