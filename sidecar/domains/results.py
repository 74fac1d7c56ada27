"""What a check says: its state, the finding and the fix in words; a report and its score."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class State(enum.Enum):
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    TEMPERROR = "temperror"  # DNS did not answer (timeout, SERVFAIL): not a failure

    @property
    def gauge(self) -> int:
        """The value of ``sidecar_domain_check``: 0 pass, 1 warn, 2 fail, 3 temperror."""
        return _GAUGE[self]


_GAUGE = {State.PASS: 0, State.WARN: 1, State.FAIL: 2, State.TEMPERROR: 3}


@dataclass(frozen=True)
class Result:
    """One check of one name. ``check`` is stable (metric label, API key), e.g. ``spf.relay:192.0.2.10``."""

    check: str
    state: State
    detail: str
    fix: str = ""

    @property
    def group(self) -> str:
        """The score group: the part before the first ``.`` or ``:`` (``spf``, ``dkim``, ``rdns`` ...)."""
        return self.check.replace(":", ".").split(".", 1)[0]

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.check, "state": self.state.value, "detail": self.detail, "fix": self.fix}


# The health score's weights, per group (docs/domain-health.md). A group without any check
# (no relay IP given, say) or whose checks all could not be answered is left out and the rest
# is scaled to 100. Within a group each check counts equally: pass 1, warn 0.5, fail 0.
WEIGHTS: dict[str, int] = {
    "mx": 10,
    "spf": 25,
    "dkim": 20,
    "dmarc": 20,
    "rdns": 15,
    "dnsbl": 5,
    "transport": 5,
}
_POINTS = {State.PASS: 1.0, State.WARN: 0.5, State.FAIL: 0.0}


def score(results: list[Result]) -> int | None:
    """0-100 from the weights above; None when no check could be answered."""
    got = total = 0.0
    for group, weight in WEIGHTS.items():
        answered = [_POINTS[r.state] for r in results if r.group == group and r.state is not State.TEMPERROR]
        if answered:
            got += weight * sum(answered) / len(answered)
            total += weight
    return None if total == 0 else round(100 * got / total)


@dataclass
class Report:
    domain: str
    results: list[Result] = field(default_factory=list)
    checked_at: float = 0.0

    @property
    def score(self) -> int | None:
        return score(self.results)

    @property
    def state(self) -> State:
        """The worst: fail, then temperror (the report is incomplete), then warn, else pass."""
        states = {r.state for r in self.results}
        for s in (State.FAIL, State.TEMPERROR, State.WARN):
            if s in states:
                return s
        return State.PASS

    def to_dict(self) -> dict[str, Any]:
        return {
            "domain": self.domain,
            "state": self.state.value,
            "score": self.score,
            "checked_at": self.checked_at,
            "checks": [r.to_dict() for r in self.results],
        }
