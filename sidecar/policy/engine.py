"""The decision: suppression at RCPT, then rate limits. Pure: state and time passed in."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from time import perf_counter
from typing import Any

from twisted.internet.defer import Deferred

from sidecar import metrics
from sidecar.config import Config
from sidecar.policy.limits import RateLimiter
from sidecar.suppression.index import SuppressionIndex

DUNNO = "DUNNO"
# First words of the actions that let a recipient through (recorded); anything else refuses,
# defers, holds, discards or redirects it.
THROUGH = frozenset({"DUNNO", "OK", "PREPEND", "WARN", "INFO", "FILTER", "BCC"})
log = logging.getLogger("sidecar.policy")


class PolicyEngine:
    def __init__(
        self,
        cfg: Config,
        index: SuppressionIndex,
        limiter: RateLimiter,
        on_ratelimit: Callable[[str, str, float], None] | None = None,
        record: Callable[[str, str, float], None] | None = None,
    ) -> None:
        self.index = index
        self.record = record  # (tenant, recipient, now) for each recipient let through
        self.on_ratelimit = on_ratelimit
        self.limiter = limiter
        s = cfg.suppression
        self.reply = s.reply
        self.skip_null_sender = s.skip_null_sender
        self.tenant_from = s.tenant_from
        self._suppressed = metrics.SUPPRESSED
        self._rejections: dict[str, object] = {}
        self._check_limits = limiter.check if limiter else None  # rules are fixed at start

    def tenant(self, attrs: Mapping[str, str], sender: str | None = None) -> str:
        how = self.tenant_from
        if how == "none":
            return ""
        user = attrs.get("sasl_username", "")
        if how != "sender_domain" and user:
            return user
        if how == "sasl_username":
            return ""
        if sender is None:
            sender = attrs.get("sender", "")
        return sender.rpartition("@")[2].lower()

    def decide(self, attrs: Mapping[str, str], now: float) -> str | Deferred[str]:
        """The action for one request (``attrs`` are the request's attributes)."""
        return self.decide_in_state(attrs, attrs.get("protocol_state", ""), now)

    def decide_in_state(self, attrs: Mapping[str, str], state: str, now: float) -> str | Deferred[str]:
        """``decide`` for a caller that has already read ``protocol_state``."""
        if state == "RCPT":
            recipient = attrs.get("recipient", "")
            sender = attrs.get("sender", "")
            known: str | None = None  # the tenant, when the suppression lookup already worked it out
            if recipient and (sender or not self.skip_null_sender):
                index = self.index
                if index.tenant_scoped:
                    tenant = known = self.tenant(attrs, sender)
                    entry = index.lookup(recipient, tenant, now)
                else:  # only global suppressions: the tenant is needed for the reply alone
                    entry = index.lookup(recipient, "", now)
                    tenant = self.tenant(attrs, sender) if entry is not None else ""
                if entry is not None:
                    self._suppressed.inc()
                    return self.reply.format(address=recipient, reason=entry.reason, date=entry.date, tenant=tenant)
            if recipient and self.record is not None:
                action: Any = self._limits(attrs, state, now)
                if isinstance(action, Deferred):
                    return action.addCallback(self._record_through, attrs, recipient, sender, known, now)
                return self._record_through(action, attrs, recipient, sender, known, now)
        return self._limits(attrs, state, now)

    def _limits(self, attrs: Mapping[str, str], state: str, now: float) -> Any:
        """The rate limits' action: DUNNO, a refusal, or a Deferred of either (a shared backend)."""
        check = self._check_limits
        if check is not None:
            hit = check(attrs, state, now)
            if hit is not None:
                if isinstance(hit, Deferred):  # a shared (Redis) backend answers later
                    return hit.addCallback(self._limited, now)
                return self._limited(hit, now)
        return DUNNO

    def _record_through(
        self, action: str, attrs: Mapping[str, str], recipient: str, sender: str, tenant: str | None, now: float
    ) -> str:
        """Record the recipient when ``action`` lets it through; ``action`` unchanged."""
        if action is DUNNO or action.partition(" ")[0].upper() in THROUGH:
            self.record(self.tenant(attrs, sender) if tenant is None else tenant, recipient, now)  # type: ignore[misc]
        return action

    def _limited(self, hit: tuple[str, str, str] | None, now: float) -> str:
        if hit is None:
            return DUNNO
        rule, key, reply = hit
        child = self._rejections.get(rule)
        if child is None:
            child = self._rejections[rule] = metrics.RATELIMIT_REJECTIONS.labels(rule)
        child.inc()  # type: ignore[attr-defined]
        if self.on_ratelimit is not None:
            self.on_ratelimit(rule, key, now)
        return reply


class GuardedDecider:
    """Wraps the engine for the protocol: time, metrics, and the safe action on any error."""

    def __init__(self, engine: PolicyEngine, safe_action: str, clock: Callable[[], float]) -> None:
        self.engine = engine
        self.safe_action = safe_action
        self.clock = clock
        self._count = metrics.POLICY_STATS.count
        self._in_state = getattr(engine, "decide_in_state", None)

    def __call__(self, attrs: Mapping[str, str]) -> str | Deferred:
        t0 = perf_counter()
        state = attrs.get("protocol_state", "")
        try:
            if self._in_state is not None:
                action = self._in_state(attrs, state, self.clock())
            else:
                action = self.engine.decide(attrs, self.clock())
        except Exception:
            action = self._failed(None, attrs)
        if action.__class__ is str:
            self._count(state, action, perf_counter() - t0)
            return action
        if isinstance(action, Deferred):
            return action.addErrback(self._failed, attrs).addCallback(self._done, t0, state)
        return self._done(action, t0, state)

    def _failed(self, err: Any, attrs: Mapping[str, str]) -> str:
        metrics.POLICY_ERRORS.inc()
        what = {k: attrs.get(k) for k in ("protocol_state", "sender", "recipient", "instance")}
        if err is None:
            log.exception("error deciding policy request (answering %s): %r", self.safe_action, what)
        else:
            log.error(
                "error deciding policy request (answering %s): %r\n%s", self.safe_action, what, err.getTraceback()
            )
        return self.safe_action

    def _done(self, action: str, t0: float, state: str) -> str:
        self._count(state, action, perf_counter() - t0)
        return action
