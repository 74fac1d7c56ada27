"""The service's background domain-health check: every ``[[domains]]`` entry, each interval.

Checks run in their own small thread pool (DNS waits never touch the policy server or the
database pool); results come back to the reactor thread, which sets the metrics, keeps the
latest report per domain for the API, and records an event (kind ``domain``, delivered as the
``domain.check_changed`` webhook) for each check whose state changed. A temporary error is no
news: it neither changes a check's known state nor fires an event.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine
from twisted.application import service
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from sidecar.domains.events import event_row, load_known, write_events
from sidecar.domains.lookup import Dns, NoResolver
from sidecar.domains.report import Target, check_domain
from sidecar.domains.results import Report, State
from sidecar.errors import one_line
from sidecar.metrics import DOMAIN_CHECK, DOMAIN_CHECK_ROUNDS, DOMAIN_CHECKED_AT, DOMAIN_SCORE

log = logging.getLogger("sidecar.domains")


class DomainSetupError(RuntimeError):
    """The checks cannot start (the message names the configuration key)."""


def postfix_defaults() -> dict[str, str]:
    """Postfix's smtp_helo_name, smtp_bind_address and smtp_bind_address6 (expanded), if postconf answers."""
    postconf = shutil.which("postconf") or "/usr/sbin/postconf"
    if not os.path.exists(postconf):
        return {}
    names = ("smtp_helo_name", "smtp_bind_address", "smtp_bind_address6")
    try:
        out = subprocess.run([postconf, "-x", *names], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    values = {}
    for line in out.stdout.splitlines():
        name, _, value = line.partition("=")
        if name.strip() in names:
            values[name.strip()] = value.strip()
    return values


def targets(cfg: Any, defaults: Callable[[], dict[str, str]] = postfix_defaults) -> list[Target]:
    """One :class:`Target` per ``[[domains]]`` entry, relay IPs and HELO name filled in."""
    if not cfg.domains:
        return []
    dh = cfg.domain_health
    relay_ips, helo = tuple(dh.relay_ips), dh.helo
    if not relay_ips or not helo:
        pf = defaults()
        helo = helo or pf.get("smtp_helo_name", "")
        relay_ips = relay_ips or tuple(
            ip for ip in (pf.get("smtp_bind_address", ""), pf.get("smtp_bind_address6", "")) if ip
        )
    if not relay_ips:
        raise DomainSetupError(
            "domain_health.relay_ips: required with [[domains]]: the public IPs this relay sends from "
            "(Postfix's smtp_bind_address is not set)"
        )
    return [
        Target(
            d.name,
            relay_ips=relay_ips,
            helo=helo,
            dkim_selectors=tuple(d.dkim_selectors),
            envelope_domain=d.envelope_domain or cfg.postfix.bounce_domain,
            dkim_domain=d.dkim_domain,
            dnsbl_zones=tuple(dh.dnsbl_zones),
        )
        for d in cfg.domains
    ]


class DomainMonitor(service.Service):
    """Checks every target each ``domain_health.interval``; ``reports`` holds the latest per domain."""

    def __init__(self, cfg: Any, engine: Engine, reactor: Any, db_pool: ThreadPool) -> None:
        self.cfg, self.engine, self.reactor, self.db_pool = cfg, engine, reactor, db_pool
        dh = cfg.domain_health
        self.pool = ThreadPool(minthreads=0, maxthreads=dh.threads, name="sidecar-domains")
        self.dns: Dns | None = None
        self.targets: list[Target] = []
        self.reports: dict[str, Report] = {}
        self.known: dict[tuple[str, str], str] = {}  # (domain, check) -> last state that was not temperror
        self._loop = LoopingCall(self.round)
        self._loop.clock = reactor
        self._loaded = False

    def startService(self) -> None:
        # Started before the listeners (makeService's order): a DomainSetupError stops start-up
        # before anything listens.
        self.targets = targets(self.cfg)
        dh = self.cfg.domain_health
        try:
            self.dns = Dns(dh.resolvers, timeout=dh.timeout, clock=self.reactor.seconds)
        except NoResolver as e:
            raise DomainSetupError(f"domain_health.resolvers: {e}") from None
        super().startService()
        self.pool.start()
        self._loop.start(self.cfg.domain_health.interval, now=True).addErrback(
            lambda f: log.error("domain checks stopped: %s", f.getErrorMessage())
        )

    def stopService(self) -> None:
        super().stopService()
        if self._loop.running:
            self._loop.stop()
        if self.dns is not None:
            self.dns.stopping = True  # a round in progress ends at its next query, so the pool stops soon
        self.pool.stop()

    @inlineCallbacks
    def round(self) -> Any:
        """Check every target (in the pool), then apply the results on the reactor thread."""
        if not self._loaded:
            try:
                self.known = yield self._db(load_known, self.engine)
                self._loaded = True
            except Exception as e:  # checks and metrics go on; changes are recorded once the states are read
                log.warning("domain checks: previous states not read (%s); retrying next round", one_line(e))
        dns = self.dns
        assert dns is not None, "round() before startService()"
        done = yield DeferredList(
            [deferToThreadPool(self.reactor, self.pool, check_domain, dns, t) for t in self.targets],
            consumeErrors=True,
        )
        rows: list[dict[str, Any]] = []
        for target, (ok, value) in zip(self.targets, done, strict=True):
            if not ok:
                DOMAIN_CHECK_ROUNDS.labels(target.domain, "error").inc()
                log.error("domain checks of %s failed: %s", target.domain, value.getErrorMessage())
                continue
            DOMAIN_CHECK_ROUNDS.labels(target.domain, "done").inc()
            rows += self.apply(value, record=self._loaded)
        if rows:
            try:
                yield self._db(write_events, self.engine, rows)
            except Exception as e:
                log.error(
                    "domain checks: %d change event(s) not recorded, retried next round: %s", len(rows), one_line(e)
                )
                self.forget(rows)

    def forget(self, rows: list[dict[str, Any]]) -> None:
        """Changes whose events were not recorded: back to the states before, so the next round finds them again."""
        for row in rows:
            key = (row["address"], row["reason"])
            if row["action"]:
                self.known[key] = row["action"]
            else:
                self.known.pop(key, None)

    def _db(self, f: Callable[..., Any], *a: Any) -> Deferred:
        return deferToThreadPool(self.reactor, self.db_pool, f, *a)

    def apply(self, report: Report, record: bool = True) -> list[dict[str, Any]]:
        """Metrics and the latest report; the event rows of the checks whose state changed
        (none, and no change remembered, when not ``record``)."""
        d = report.domain
        old = self.reports.get(d)
        self.reports[d] = report
        current = {r.check for r in report.results}
        for gone in {r.check for r in old.results} - current if old else ():
            DOMAIN_CHECK.remove(d, gone)
        for r in report.results:
            DOMAIN_CHECK.labels(d, r.check).set(r.state.gauge)
        if report.score is not None:
            DOMAIN_SCORE.labels(d).set(report.score)
        DOMAIN_CHECKED_AT.labels(d).set(report.checked_at)
        rows: list[dict[str, Any]] = []
        for r in report.results if record else ():
            if r.state is State.TEMPERROR:
                continue
            before = self.known.get((d, r.check))
            self.known[(d, r.check)] = r.state.value
            if before == r.state.value or (before is None and r.state is State.PASS):
                continue
            log.info("domain %s: %s %s -> %s: %s", d, r.check, before or "-", r.state.value, r.detail)
            rows.append(event_row(d, r.check, r.state.value, before, r.detail, r.fix, report.score))
        return rows
