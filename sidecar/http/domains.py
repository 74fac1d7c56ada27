"""``GET /domains`` and ``GET /domains/{name}``: the latest domain-health reports (docs/domain-health.md)."""

from __future__ import annotations

from typing import Any

from sidecar.http.api import ApiError, Call, Route
from sidecar.http.contract import Param, text
from sidecar.http.schemas import STR, obj, ok

_NUM_OR_NULL = {"type": ["number", "null"]}
_INT_OR_NULL = {"type": ["integer", "null"]}
_STATE = {"enum": ["pass", "warn", "fail", "temperror", None]}
_HEAD = {"domain": STR, "state": _STATE, "score": _INT_OR_NULL, "checked_at": _NUM_OR_NULL}
CHECK = obj({"check": STR, "state": _STATE, "detail": STR, "fix": STR})
DOMAIN_SUMMARY = obj({**_HEAD, "problems": {"type": "array", "items": STR}})
DOMAIN_REPORT = obj({**_HEAD, "checks": {"type": "array", "items": CHECK}})
NAME = (Param("name", text(253, example="example.com"), "a configured [[domains]] name", "path"),)


def _monitor(c: Call) -> Any:
    return getattr(c.api, "domain_monitor", None)


def _not_yet(name: str) -> dict[str, Any]:
    """A configured domain before its first round of checks has completed."""
    return {"domain": name, "state": None, "score": None, "checked_at": None}


def _summary(name: str, report: Any) -> dict[str, Any]:
    if report is None:
        return {**_not_yet(name), "problems": []}
    return {
        "domain": name,
        "state": report.state.value,
        "score": report.score,
        "checked_at": report.checked_at,
        "problems": [r.check for r in report.results if r.state.value != "pass"],
    }


def list_domains(c: Call) -> Any:
    """Every configured domain: its state, score and the checks that did not pass (null before the first round)."""
    monitor = _monitor(c)
    reports = monitor.reports if monitor is not None else {}
    return {"items": [_summary(d.name, reports.get(d.name)) for d in c.api.cfg.domains]}


def get_domain(c: Call) -> Any:
    name = c.args["name"].strip().rstrip(".").lower()
    if name not in {d.name for d in c.api.cfg.domains}:
        raise ApiError(404, "not a configured domain ([[domains]])", "name")
    monitor = _monitor(c)
    report = monitor.reports.get(name) if monitor is not None else None
    if report is None:
        return {**_not_yet(name), "checks": []}
    return report.to_dict()


ROUTES: list[Route] = [
    Route(
        b"GET",
        ("domains",),
        "read",
        list_domains,
        "Domain health: every configured domain's state and score",
        responses={200: ok(obj({"items": {"type": "array", "items": DOMAIN_SUMMARY}}), "Every configured domain")},
    ),
    Route(
        b"GET",
        ("domains", "{name}"),
        "read",
        get_domain,
        "Domain health: one domain's checks, with the fixes",
        params=NAME,
        responses={200: ok(DOMAIN_REPORT, "The domain's latest checks")},
    ),
]
