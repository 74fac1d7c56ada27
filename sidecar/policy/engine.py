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
from sidecar.reputation.live import HOLD_ACTION, PAUSE_ACTION, LiveReputation
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
        reputation: LiveReputation | None = None,
    ) -> None:
        self.reputation = reputation  # levels read at RCPT and END-OF-MESSAGE; sends counted
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
        rep = self.reputation
        if state == "RCPT":
            recipient = attrs.get("recipient", "")
            sender = attrs.get("sender", "")
            known: str | None = None  # the tenant, when the suppression lookup already worked it out
            extra = 0  # level 3: more units of the rate limits per recipient
            if rep is not None and rep.levels:  # one dict read, only while some tenant is above level 1
                known = self.tenant(attrs, sender)
                level = rep.levels.get(known, 1)
                if level >= 5:
                    return PAUSE_ACTION
                if level == 3:
                    extra = rep.throttle_factor - 1
            if recipient and (sender or not self.skip_null_sender):
                index = self.index
                if index.tenant_scoped:
                    tenant = known = self.tenant(attrs, sender) if known is None else known
                    entry = index.lookup(recipient, tenant, now)
                else:  # only global suppressions: the tenant is needed for the reply alone
                    entry = index.lookup(recipient, "", now)
                    tenant = (self.tenant(attrs, sender) if known is None else known) if entry is not None else ""
                if entry is not None:
                    self._suppressed.inc()
                    return self.reply.format(address=recipient, reason=entry.reason, date=entry.date, tenant=tenant)
            if recipient and self.record is not None:
                action: Any = self._limits(attrs, state, now, extra)
                if isinstance(action, Deferred):
                    return action.addCallback(self._record_through, attrs, recipient, sender, known, now)
                return self._record_through(action, attrs, recipient, sender, known, now)
            return self._limits(attrs, state, now, extra)
        if state == "END-OF-MESSAGE" and rep is not None:
            return self._end_of_message(rep, attrs, now)
        return self._limits(attrs, state, now)

    def _end_of_message(self, rep: LiveReputation, attrs: Mapping[str, str], now: float) -> Any:
        """Count the message's recipients and note its queue id; level 4 answers HOLD."""
        action = self._limits(attrs, "END-OF-MESSAGE", now)
        tenant = self.tenant(attrs)
        if not tenant:
            return action
        level = rep.levels.get(tenant, 1) if rep.levels else 1
        held = level == 4
        if level == 3:  # the message uses throttle_factor units of the message-counted limits
            instance = attrs.get("instance", "")
            for i in range(1, rep.throttle_factor):
                more = self._limits({**attrs, "instance": f"{instance}#{i}"}, "END-OF-MESSAGE", now)
                if isinstance(more, Deferred):
                    more.addErrback(lambda f: log.warning("throttle commit failed: %s", f.getErrorMessage()))
        count = attrs.get("recipient_count", "")
        rep.sent(tenant, int(count) if count.isdigit() else 0, attrs.get("queue_id", ""), held, now)
        if not held:
            return action
        if isinstance(action, Deferred):
            return action.addCallback(lambda a: HOLD_ACTION if a == DUNNO else a)
        return HOLD_ACTION if action == DUNNO else action

    def _again(self, hit: Any, check: Any, attrs: Mapping[str, str], state: str, now: float, extra: int) -> Any:
        """Level 3: the recipient uses ``extra`` more units of each limit; the first refusal answers."""
        while hit is None and extra > 0:
            extra -= 1
            hit = check(attrs, state, now)
            if isinstance(hit, Deferred):
                return hit.addCallback(self._again, check, attrs, state, now, extra)
        return hit

    def _limits(self, attrs: Mapping[str, str], state: str, now: float, extra: int = 0) -> Any:
        """The rate limits' action: DUNNO, a refusal, or a Deferred of either (a shared backend)."""
        check = self._check_limits
        if check is not None:
            hit = check(attrs, state, now)
            if extra:
                if isinstance(hit, Deferred):
                    hit = hit.addCallback(self._again, check, attrs, state, now, extra)
                else:
                    hit = self._again(hit, check, attrs, state, now, extra)
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
