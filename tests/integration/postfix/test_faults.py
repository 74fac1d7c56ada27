"""Issue 4, fault tolerance: what happens to Postfix's mail when parts of the sidecar fail.

a. policy server down -> Postfix's default action: test_wiring.py::test_policy_service_down
   (fail-open and fail-closed);
b. database unavailable while DSNs arrive: `sidecar ingest` exits 75, the DSNs wait in
   Postfix's deferred queue, and after recovery each is recorded exactly once;
c. `sidecar serve` SIGKILLed under load and restarted: no suppression lost, rate-limit
   counters restored, Postfix answered again within seconds;
d. a burst of DSNs (1,000; SIDECAR_DSN_BURST=N changes it) through the pipe: all recorded;
e. garbage on the policy socket while Postfix's own requests keep being answered.

Figures are printed (run with -s); docs/postfix.md "Fault tolerance" records them.
"""

from __future__ import annotations

import os
import random
import re
import socket
import threading
import time
import urllib.request
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from lab_env import Lab, MakeLab
from lab_policy import policy_query
from lab_postfix import BOUNCE_DOMAIN, wait_until
from lab_sidecar import db_scalar, sidecar_cli, sidecar_json

pytestmark = pytest.mark.postfix

APP_SENDER = f"bounces@{BOUNCE_DOMAIN}"
BOUNCE_ADDRESS = f"bounces@{BOUNCE_DOMAIN}"
DELIVERED_VIA_PIPE = r"relay=sidecar-bounce, .*status=sent \(delivered via sidecar-bounce service\)"
DEFERRED_VIA_PIPE = r"relay=sidecar-bounce, .*dsn=4\.3\.0, status=deferred \(temporary failure"
BOUNCED_VIA_PIPE = r"relay=sidecar-bounce, .*status=bounced"
GARBAGE_SOURCE = "127.0.0.2"  # loopback; the hostile clients' address (see Garbage.connect)
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)  # Linux >= 4.2
DSN_TEMPLATE = Path(__file__).resolve().parents[2] / "data" / "bounces" / "postfix" / "dsn-failed-550-5.1.1.eml"


# These scenarios are about the pipe (nothing lost, nothing twice), not about who may suppress:
# bounces of plain (non-VERP) mail suppress without corroboration. (Once the policy server keeps
# the record of recipients, it corroborates those sent through the policy service, not test_d's.)
PIPE_MECHANICS = {"require_corroboration": False}


def user_unknown(address: str) -> str:
    return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"


def refused(action: str) -> bool:
    return action.split(" ")[0].upper() not in ("DUNNO", "OK", "PERMIT")


def figure(text: str) -> None:
    """A measured figure: printed (pytest -s) for docs/postfix.md."""
    print(f"\n[fault-figure] {text}", flush=True)


def count(lab: Lab, sql: str) -> int:
    return int(db_scalar(lab.db_url, sql) or 0)


def events_by_address(lab: Lab, like: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in lab.events():
        address = str(e.get("address") or e.get("recipient") or "").lower()
        if re.fullmatch(like, address):
            out[address] = out.get(address, 0) + 1
    return out


def metric(lab: Lab, name: str) -> dict[str, float]:
    """Samples of one metric from the running sidecar's /metrics: {labels: value}."""
    assert lab.server is not None
    with urllib.request.urlopen(lab.server.url + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out = {}
    for m in re.finditer(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", text, re.MULTILINE):
        out[m.group(1) or ""] = float(m.group(2))
    return out


def add_suppressions(lab: Lab, addresses: list[str]) -> None:
    result = sidecar_cli("suppressions", "add", "--db", lab.db_url, "--reason", "fault-test", *addresses)
    assert result.returncode == 0, result.stderr + result.stdout


# ---------------------------------------------------------------------------------------
# b. database unavailable while DSNs arrive


@pytest.mark.parametrize("backend", ["sqlite-no-handoff", "postgresql-handoff"])
def test_b_database_down_dsns_wait_in_queue_then_recorded_once(
    make_lab: MakeLab, request: pytest.FixtureRequest, backend: str
) -> None:
    """SQLite: `ingest` records in-process as the pipe user and the database directory is made
    unreachable (chmod 000). PostgreSQL (the session's private server, tests/harness/services.py):
    `ingest` hands off to `serve`, and the server is stopped, then started again (`ingest`'s
    own fallback could not reach it either)."""
    hard = [f"dbdown{n}@example.test" for n in range(3)]
    replies = {a: user_unknown(a) for a in hard}
    pg: Any = None
    if backend.startswith("sqlite"):
        lab = make_lab(rcpt_replies=replies, config={"ingest": {"socket": "", **PIPE_MECHANICS}})
        db_dir = Path(lab.db_url.removeprefix("sqlite:///")).parent
        mode = db_dir.stat().st_mode & 0o7777

        def outage() -> None:
            db_dir.chmod(0o000)

        def recover() -> None:
            db_dir.chmod(mode)

    else:
        pg = request.getfixturevalue("postgres_server")
        lab = make_lab(rcpt_replies=replies, db_url=pg.create_database("faults_b"), config={"ingest": PIPE_MECHANICS})
        outage, recover = pg.stop, pg.start
    try:
        outage()
        mark = lab.postfix.mark_log()
        for a in hard:
            assert lab.postfix.send(APP_SENDER, [a]).accepted  # the policy path needs no database
        lab.postfix.wait_for_log(DEFERRED_VIA_PIPE, timeout=30, since=mark, count=len(hard))
        log = lab.postfix.log_text()[mark:]
        assert "Command output: sidecar ingest: temporary failure" in log, lab.postfix.log_tail()
        # SQLite: the in-process recorder cannot open the file; PostgreSQL: the service said TEMPFAIL
        expected = "OperationalError" if pg is None else "service: TEMPFAIL"
        assert expected in log, lab.postfix.log_tail()
        reason = re.search(r"Command output: (.*)", log)
        queue = lab.postfix.queue()
        assert len(queue) == len(hard), queue
        assert {q["queue_name"] for q in queue} == {"deferred"}, queue
        assert {q["sender"] for q in queue} == {"MAILER-DAEMON"}, queue
        # a retry while the database is still down defers again; nothing is bounced
        retry_mark = lab.postfix.mark_log()
        lab.postfix.flush()
        lab.postfix.wait_for_log(DEFERRED_VIA_PIPE, timeout=30, since=retry_mark, count=len(hard))
        assert len(lab.postfix.queue()) == len(hard)
    finally:
        recover()
    recovered = time.monotonic()
    lab.postfix.flush()
    lab.postfix.wait_queue_empty(timeout=60)
    drained = time.monotonic() - recovered
    assert not re.search(BOUNCED_VIA_PIPE, lab.postfix.log_text()), lab.postfix.log_tail()
    assert count(lab, "SELECT COUNT(*) FROM raw_messages") == len(hard)
    assert events_by_address(lab, r"dbdown\d+@example\.test") == {a: 1 for a in hard}
    suppressed = {str(r.get("address", "")).lower() for r in lab.suppressions()}
    assert set(hard) <= suppressed, suppressed
    # the running service picks the new suppressions up once its database is back
    lab.wait_policy_rejects(hard[-1], APP_SENDER)
    # once more: a second flush finds nothing, nothing is recorded twice
    lab.postfix.flush()
    time.sleep(0.5)
    assert count(lab, "SELECT COUNT(*) FROM raw_messages") == len(hard)
    figure(
        f"b[{backend}]: {len(hard)} DSNs deferred (exit 75) during the outage; "
        f"recovery -> queue empty, each recorded once: {drained:.2f} s after `postqueue -f`. "
        f"Deferral reason: {reason.group(1)[:160] if reason else '?'}"
    )


# ---------------------------------------------------------------------------------------
# c. sidecar serve killed with SIGKILL under load


@dataclass
class Load:
    """Background traffic: mail through Postfix, hard bounces (DSNs) and direct policy queries."""

    lab: Lab
    hard_prefix: str
    stop: threading.Event = field(default_factory=threading.Event)
    sends: list[tuple[float, bool, int, str]] = field(default_factory=list)  # (t, accepted, code, text)
    bounces: list[tuple[float, str, bool]] = field(default_factory=list)  # (t, address, accepted)
    probes: list[tuple[float, bool]] = field(default_factory=list)  # (t, answered)
    errors: list[BaseException] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)

    def _loop(self, step: Callable[[int], None], pause: float) -> None:
        n = 0
        try:
            while not self.stop.is_set():
                step(n)
                n += 1
                self.stop.wait(pause)
        except BaseException as exc:
            self.errors.append(exc)

    def _send(self, n: int) -> None:
        r = self.lab.postfix.send(APP_SENDER, [f"load{n}@example.test"])
        self.sends.append((time.monotonic(), r.accepted, r.code, r.message))

    def _bounce(self, n: int) -> None:
        address = f"{self.hard_prefix}{n}@example.test"
        self.lab.sink.rcpt_replies[address] = user_unknown(address)
        r = self.lab.postfix.send(APP_SENDER, [address])
        self.bounces.append((time.monotonic(), address, r.accepted))

    def _probe(self, n: int) -> None:
        try:
            ok = policy_query(self.lab.policy_port, {"recipient": f"probe{n}@example.test"}, timeout=1.0) == "DUNNO"
        except (OSError, AssertionError):
            ok = False
        self.probes.append((time.monotonic(), ok))

    def start(self) -> Load:
        steps = (("send", self._send, 0.05), ("bounce", self._bounce, 0.2), ("probe", self._probe, 0.02))
        for name, step, pause in steps:
            t = threading.Thread(target=self._loop, args=(step, pause), name=f"load-{name}", daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def join(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(120)
        if self.errors:
            raise AssertionError(f"load thread failed: {self.errors[0]!r}") from self.errors[0]


def limit_used(lab: Lab, key: str) -> int:
    [row] = sidecar_json("limits", "show", key, "--config", str(lab.config_path))
    return int(row["used"])


def test_c_serve_sigkill_under_load_then_restart(make_lab: MakeLab) -> None:
    tenant, capacity = "tenant-rl", 5
    lab = make_lab(
        config={
            "ingest": PIPE_MECHANICS,
            "ratelimit": {
                "rules": [
                    {
                        "name": "per-tenant",
                        "key": ["sasl_username"],
                        "count": "messages",
                        "limits": [{"rate": capacity, "per": "1h", "burst": 0}],
                    }
                ]
            },
        }
    )
    assert lab.server is not None and lab.config_path is not None
    from sidecar.config import load_config

    persist = load_config(lab.config_path).ratelimit.persist_interval
    key = f"per-tenant:{tenant}"
    # suppressions that exist before the crash
    before = [f"pre{n}@example.test" for n in range(200)]
    add_suppressions(lab, before)
    lab.wait_policy_rejects(before[-1], APP_SENDER)

    load = Load(lab, hard_prefix="crash").start()
    try:
        # three messages counted and persisted (ratelimit.persist_interval), one more just before the kill
        for n in range(3):
            r = lab.postfix.send(APP_SENDER, [f"rl{n}@example.test"], xclient={"LOGIN": tenant})
            assert r.accepted, r
        wait_until(lambda: limit_used(lab, key) == 3, persist * 3 + 5, 0.1, f"{key} persisted (used 3)")
        time.sleep(1.0)  # load keeps flowing: DSNs being handed off, policy requests in flight
        r = lab.postfix.send(APP_SENDER, ["rl3@example.test"], xclient={"LOGIN": tenant})
        assert r.accepted, r
        killed = lab.server.kill()  # the 4th message's count is less than persist_interval old
        time.sleep(1.0)  # Postfix notices: fail-closed in the lab, 451 4.3.5
        restart = time.monotonic()
        lab.server.start()
        healthy = time.monotonic()
        wait_until(lambda: any(t > restart and ok for t, ok in load.probes), 30, 0.02, "a policy answer")
        wait_until(lambda: any(t > restart and acc for t, acc, _, _ in load.sends), 60, 0.05, "a message accepted")
        time.sleep(2.0)  # more load after the restart
    finally:
        load.join()
    answered = min(t for t, ok in load.probes if t > restart and ok)
    accepted = min(t for t, acc, _, _ in load.sends if t > restart and acc)
    last_before = max(t for t, ok in load.probes if t < killed and ok)
    figure(
        f"c: serve SIGKILLed under load ({len(load.sends)} messages, {len(load.bounces)} bounces, "
        f"{len(load.probes)} policy probes); restart -> healthy {healthy - restart:.2f} s, "
        f"-> first policy answer {answered - restart:.2f} s, -> first message accepted by Postfix "
        f"{accepted - restart:.2f} s; policy unanswered for {answered - last_before:.2f} s in all"
    )
    assert answered - restart < 15, "the restarted sidecar must answer policy requests within seconds"
    assert accepted - restart < 20, "Postfix must accept mail again within seconds of the restart"

    # every message was either accepted and delivered, or refused with the fail-closed 451
    for _, acc, code, text in load.sends:
        assert acc or (code == 451 and "4.3.5" in text), (code, text)
    delivered = sum(1 for _, acc, _, _ in load.sends if acc)

    def load_delivered() -> int:
        with lab.sink.log.lock:
            return sum(1 for m in lab.sink.log.messages if m.rcpt_tos[0].startswith("load"))

    wait_until(lambda: load_delivered() >= delivered, 30, 0.1, "every accepted load message at the remote MX")

    # rate-limit counters: the 3 persisted ones survived; the 4th may be lost (sent within one interval)
    used = limit_used(lab, key)
    assert used in (3, 4), used
    more = 0
    while True:
        r = lab.postfix.send(APP_SENDER, [f"rl-after{more}@example.test"], xclient={"LOGIN": tenant})
        if not r.accepted:
            assert 400 <= r.code < 500 and "4.7.1" in r.message, r
            break
        more += 1
        assert more <= capacity - 3, f"rate limit not restored: {more} more accepted after the restart"
    figure(
        f"c: rate-limit counter after restart: used {used} of {capacity} "
        f"(persist_interval {persist:g} s); {more} more accepted, then 4.7.1"
    )

    # no suppression lost: those from before the crash, and every hard bounce sent under load
    lab.postfix.wait_queue_empty(timeout=60)
    assert not re.search(BOUNCED_VIA_PIPE, lab.postfix.log_text()), "a DSN was bounced (lost)"
    for a in before:
        assert refused(lab.policy_action(a, APP_SENDER)), a
    rejected_hard = sorted({a for a, reply in lab.sink.log.rcpt_attempts if a.startswith("crash")})
    assert rejected_hard, "no hard bounce happened under load"

    def suppressed() -> set[str]:
        return {str(r.get("address", "")).lower() for r in lab.suppressions()}

    wait_until(lambda: set(rejected_hard) <= suppressed(), 20, 0.25, "every hard-bounced address suppressed")
    wait_until(
        lambda: all(refused(lab.policy_action(a, APP_SENDER)) for a in rejected_hard),
        20,
        0.25,
        "the restarted server to refuse every hard-bounced address",
    )
    assert events_by_address(lab, r"crash\d+@example\.test") == {a: 1 for a in rejected_hard}
    by_service = len(re.findall(r"ingested queue_id=", lab.server.log.read_text(errors="replace")))
    figure(
        f"c: {len(before)} suppressions from before the crash and {len(rejected_hard)} hard bounces "
        f"under load all suppressed after the restart, each event recorded once "
        f"({by_service} DSNs recorded by the service, {len(rejected_hard) - by_service} by `ingest` itself)"
    )


# ---------------------------------------------------------------------------------------
# d. a burst of DSNs through the pipe


def burst_size() -> int:
    return int(os.environ.get("SIDECAR_DSN_BURST", "1000"))


def burst_values() -> dict[str, str]:
    """What bench/bench_dsn_burst.py compares: SIDECAR_DSN_BURST_PIPE=cli runs `sidecar ingest` as
    the pipe command instead of the thin entry `sidecar postfix-config` prints;
    SIDECAR_DSN_BURST_MAXPROC sets the sidecar-bounce service's process limit."""
    values = {}
    if os.environ.get("SIDECAR_DSN_BURST_PIPE", "thin") == "cli":
        from tests.harness.sidecar import BIN

        values["PIPE_COMMAND"] = f"{BIN} ingest"
    if os.environ.get("SIDECAR_DSN_BURST_MAXPROC"):
        values["PIPE_MAXPROC"] = os.environ["SIDECAR_DSN_BURST_MAXPROC"]
    return values


def dsn_messages(n: int) -> list[bytes]:
    """Postfix-style DSNs (the lab's real one), one per failed recipient, all different."""
    template = DSN_TEMPLATE.read_text()
    # pipe(8)'s D/O/R flags add these again; a second Delivered-To would look like a loop
    template = "\n".join(
        line
        for line in template.split("\n")
        if not line.startswith(("Return-Path:", "X-Original-To:", "Delivered-To:"))
    )
    stamp = time.time_ns()
    return [
        template.replace("hard1@example.test", f"burst{i}@example.test")
        .replace("8D48F224922", f"B{i:06d}")
        .replace("<20261128033040.", f"<{stamp}.{i}.")
        .replace("\n", "\r\n")
        .encode()
        for i in range(n)
    ]


def test_d_burst_of_dsns_through_the_pipe(make_lab: MakeLab) -> None:
    n = burst_size()
    lab = make_lab(config={"ingest": PIPE_MECHANICS}, values=burst_values())  # DSNs for addresses never sent to
    messages = dsn_messages(n)
    mark = lab.postfix.mark_log()
    started = time.monotonic()
    refusals = lab.postfix.inject("", BOUNCE_ADDRESS, messages, connections=4)
    injected = time.monotonic()
    assert refusals == [], refusals[:5]

    def recorded() -> int:
        return count(lab, "SELECT COUNT(*) FROM raw_messages")

    wait_until(lambda: recorded() >= n, 240, 0.25, f"{n} DSNs recorded")
    stored = time.monotonic()
    lab.postfix.wait_queue_empty(timeout=60, flush=False)
    done = time.monotonic()
    log = lab.postfix.log_text()[mark:]
    sent = len(re.findall(DELIVERED_VIA_PIPE, log))
    deferrals = len(re.findall(r"relay=sidecar-bounce, .*status=deferred", log))
    took = done - started
    by_service = metric(lab, "sidecar_ingest_messages_total").get('{outcome="parsed"}', 0)
    figure(
        f"d: {n} DSNs: injected over SMTP in {injected - started:.2f} s, all recorded after "
        f"{stored - started:.2f} s, queue empty after {took:.2f} s = {n / took:.1f} messages/s "
        f"(deferred on the way: {deferrals})"
    )
    figure(f"d: recorded by the service (hand-off): {by_service:.0f}, by `ingest` in-process: {n - by_service:.0f}")
    assert recorded() == n
    assert sent == n, f"{sent} of {n} delivered via the pipe"
    assert not re.search(r"status=bounced", log), "a DSN was bounced (lost)"
    assert count(lab, "SELECT COUNT(DISTINCT address) FROM events WHERE address LIKE 'burst%'") == n
    assert count(lab, "SELECT COUNT(*) FROM events") == n
    assert count(lab, "SELECT COUNT(*) FROM suppressions WHERE address LIKE 'burst%'") == n
    lab.wait_policy_rejects(f"burst{n - 1}@example.test", APP_SENDER)


# ---------------------------------------------------------------------------------------
# e. garbage on the policy socket


class Garbage:
    """Hostile clients on the policy port until stopped; counts what each kind did."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.stop = threading.Event()
        self.done: dict[str, int] = {}
        self.idle: list[socket.socket] = []
        self.errors: list[BaseException] = []
        self.threads: list[threading.Thread] = []
        self.rng = random.Random(4)
        self.lock = threading.Lock()
        self.probes: list[tuple[float, str]] = []  # (seconds, action)

    def connect(self) -> socket.socket:
        # From another loopback address: thousands of short connections a second from
        # 127.0.0.1 make the kernel reuse ephemeral ports still in TIME_WAIT (tcp_tw_reuse=2
        # on loopback), and then about 3 in 1,000 of the well-behaved clients' fresh connections
        # (the probe's, smtpd's) were closed before any byte reached the sidecar (it logged no
        # drop for them): an artefact of the flood sharing the source address, not the server's doing.
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            # the port is chosen at connect (as without bind), not at bind, which is slow
            s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            s.bind((GARBAGE_SOURCE, 0))
            s.settimeout(5)
            s.connect(("127.0.0.1", self.port))
        except BaseException:
            s.close()
            raise
        return s

    def _one(self, kind: str, payload: Callable[[], bytes], read_reply: bool) -> None:
        """One connection: send the payload; then either close at once, or wait for the
        server's verdict (it should close the connection on us)."""
        s = self.connect()
        outcome = kind
        try:
            with suppress(OSError):
                s.sendall(payload())
            if read_reply:
                s.settimeout(5)
                try:
                    while s.recv(65536):
                        pass
                    outcome = f"{kind} (closed by the sidecar)"
                except TimeoutError:
                    outcome = f"{kind} (left open)"
                except OSError:
                    outcome = f"{kind} (reset by the sidecar)"
        finally:
            s.close()
        with self.lock:
            self.done[outcome] = self.done.get(outcome, 0) + 1

    def _loop(self, kind: str, payload: Callable[[], bytes], read_reply: bool) -> None:
        try:
            while not self.stop.is_set():
                self._one(kind, payload, read_reply)
        except BaseException as exc:
            self.errors.append(exc)

    def _probe(self) -> None:
        """A well-behaved client on a fresh connection every 50 ms, timed."""
        try:
            while not self.stop.is_set():
                t0 = time.monotonic()
                action = policy_query(self.port, {"recipient": "probe@example.test"}, timeout=10)
                self.probes.append((time.monotonic() - t0, action))
                self.stop.wait(0.05)
        except BaseException as exc:
            self.errors.append(exc)

    def open_idle(self, n: int) -> None:
        for i in range(n):
            s = self.connect()
            if i % 2:  # half of them hold half a request
                s.sendall(b"request=smtpd_access_policy\nprotocol_state=RCPT\nrecip")
            self.idle.append(s)

    def start(self) -> Garbage:
        half = b"request=smtpd_access_policy\nprotocol_state=RCPT\nsender=a@b.test\nrecipient=victim@exa"
        kinds: list[tuple[str, Callable[[], bytes], bool]] = [  # (kind, payload, wait for the verdict)
            ("random-bytes", lambda: self.rng.randbytes(70000), True),
            ("random-lines", lambda: b"\n".join(self.rng.randbytes(40) for _ in range(200)) + b"\n\n", True),
            ("1MB-line", lambda: b"x" * (1 << 20) + b"\n\n", True),
            ("half-request-then-close", lambda: half, False),
            ("nul-and-equals", lambda: b"=\x00=\n" * 5000 + b"\n", True),
        ]
        t = threading.Thread(target=self._probe, daemon=True, name="garbage-probe")
        t.start()
        self.threads.append(t)
        for kind, payload, read_reply in kinds:
            t = threading.Thread(
                target=self._loop, args=(kind, payload, read_reply), daemon=True, name=f"garbage-{kind}"
            )
            t.start()
            self.threads.append(t)
        return self

    def join(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)
        for s in self.idle:
            s.close()
        if self.errors:
            raise AssertionError(f"garbage thread failed: {self.errors[0]!r}") from self.errors[0]


HANDOFF_JUNK = (
    b"not json\n",
    b'{"length": 1e400}\n',  # OverflowError
    b"[" * 10000 + b"]" * 10000 + b"\n",  # RecursionError in json
    b'{"length": 3, "size": "big"}\nabc',  # ValueError building the envelope
    b'{"length": -1}\n',
)


def handoff_exchange(path: Path, data: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(path))
        s.sendall(data)
        out = b""
        while chunk := s.recv(4096):
            out += chunk
        return out


def test_e_garbage_on_policy_socket_while_postfix_is_answered(make_lab: MakeLab) -> None:
    lab = make_lab()
    assert lab.server is not None
    blocked = "blocked@example.test"
    add_suppressions(lab, [blocked])
    lab.wait_policy_rejects(blocked, APP_SENDER)

    garbage = Garbage(lab.policy_port)
    opened = time.monotonic()
    garbage.open_idle(500)
    idle_open = time.monotonic() - opened
    garbage.start()
    timings: list[float] = []
    try:
        time.sleep(0.5)
        for n in range(5):
            t0 = time.monotonic()
            good = lab.postfix.send(APP_SENDER, [f"fine{n}@example.test"])
            timings.append(time.monotonic() - t0)
            assert good.accepted, good
            t0 = time.monotonic()
            bad = lab.postfix.send(APP_SENDER, [blocked])
            timings.append(time.monotonic() - t0)
            assert (bad.stage, bad.code) == ("rcpt", 550) and "suppressed" in bad.message, bad
            assert refused(lab.policy_action(blocked, APP_SENDER))
            assert lab.policy_action(f"fine{n}@example.test", APP_SENDER) == "DUNNO"
        # the idle clients are still connected and one can send a request; the ones holding
        # half a request were closed server.request_timeout (5 s) after it began (issue 10)
        # (at least 250: a random-bytes flood client may also leave a request unfinished)
        wait_until(
            lambda: metric(lab, "sidecar_policy_bad_input_total").get('{problem="request-timeout"}', 0) >= 250,
            30,
            0.2,
            "the half requests timed out",
        )
        for held_half in garbage.idle[1::2]:  # each one holding half a request was closed by the server
            held_half.settimeout(10)
            try:
                answer = held_half.recv(4096)
            except ConnectionResetError:
                answer = b""  # aborted (RST): closed too
            assert answer == b"", "a half request was answered instead of closed"
        connections = metric(lab, "sidecar_policy_connections")[""]
        assert connections >= 250, connections
        finisher = garbage.idle[0]
        finisher.sendall(
            b"request=smtpd_access_policy\nprotocol_state=RCPT\nrecipient=fine@example.test\nsender=a@lab.test\n\n"
        )
        finisher.settimeout(5)
        assert finisher.recv(4096).startswith(b"action=DUNNO"), "an idle connection was dropped"
    finally:
        garbage.join()
    for n in range(5):
        lab.sink.wait_for_message(f"fine{n}@example.test")
    lab.postfix.wait_queue_empty()

    # the ingest hand-off socket too: each malformed request gets TEMPFAIL (and no traceback),
    # and a DSN through Postfix is still recorded by the service afterwards
    for junk in HANDOFF_JUNK:
        assert handoff_exchange(lab.root / "run" / "ingest.sock", junk) == b"TEMPFAIL malformed request header\n", junk
    [dsn] = dsn_messages(1)
    assert lab.postfix.inject("", BOUNCE_ADDRESS, [dsn], connections=1) == []
    wait_until(lambda: count(lab, "SELECT COUNT(*) FROM raw_messages") == 1, 30, 0.1, "the DSN recorded")
    assert metric(lab, "sidecar_ingest_messages_total").get('{outcome="parsed"}') == 1
    assert lab.server.proc is not None and lab.server.proc.poll() is None, "sidecar serve died"
    assert lab.policy_action("fine@example.test", APP_SENDER) == "DUNNO"
    warnings = re.findall(r"warning: .*(?:policy|problem talking)", lab.postfix.log_text())
    assert not warnings, warnings[:3]
    assert garbage.probes and {a for _, a in garbage.probes} == {"DUNNO"}, garbage.probes[:5]
    bad_input = metric(lab, "sidecar_policy_bad_input_total")
    assert sum(bad_input.values()) > 0, bad_input
    assert "Traceback" not in lab.server.log.read_text(errors="replace"), lab.server.log_tail()
    probe_times = sorted(t for t, _ in garbage.probes)
    figure(
        f"e: garbage on the policy port ({', '.join(f'{k} x{v}' for k, v in sorted(garbage.done.items()))}) "
        f"plus 500 idle connections, 250 of them holding half a request (opened in {idle_open:.2f} s): "
        f"10 SMTP transactions through Postfix "
        f"answered correctly, slowest {max(timings) * 1000:.0f} ms, median "
        f"{sorted(timings)[len(timings) // 2] * 1000:.0f} ms; {len(probe_times)} policy queries on fresh "
        f"connections meanwhile: median {probe_times[len(probe_times) // 2] * 1000:.1f} ms, "
        f"slowest {probe_times[-1] * 1000:.0f} ms; dropped for bad input: "
        f"{', '.join(f'{k.split(chr(34))[1]} {v:.0f}' for k, v in sorted(bad_input.items()))}"
    )
