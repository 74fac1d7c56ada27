"""The management API's operations (routes at the bottom; described in /openapi.json and docs/api.md)."""

from __future__ import annotations

import csv
import io
import json
import re
import time
from collections.abc import Iterator
from typing import IO, Any

from twisted.internet.defer import inlineCallbacks

from sidecar.config import redact_url
from sidecar.http import domains
from sidecar.http import queries as q
from sidecar.http import schemas as S
from sidecar.http.api import STREAMING, ApiError, Call, Reply, Route
from sidecar.suppression.address import AddressError
from sidecar.suppression.bulk import ImportIncomplete
from sidecar.suppression.fields import check_text
from sidecar.suppression.rows import CSV_FIELDS, Line
from sidecar.units import parse_time
from sidecar.webhooks import deliveries, outbox

MAX_ID = 2**62
_ASCII_INT = re.compile(r"[0-9]{1,19}")

# -- parameters -----------------------------------------------------------------------------------
# Routes with a contract (schemas.py) read ``c.args`` and ``c.body``, already checked against it;
# p_str, p_int and p_choice check the raw text of routes that have none yet.


def p_str(c: Call, name: str, max_len: int = 320) -> str | None:
    """A text parameter: at most ``max_len`` characters, no control characters (InvalidValue naming it)."""
    return check_text(name, c.params.get(name), max_len)


def ascii_int(value: str, name: str, lo: int = 0, hi: int = MAX_ID) -> int:
    """An integer written in ASCII digits (not "١٢", not 5,000 digits) within lo..hi."""
    if not _ASCII_INT.fullmatch(value) or not lo <= int(value) <= hi:
        raise ApiError(400, f"expected an integer from {lo} to {hi}", name)
    return int(value)


def p_int(c: Call, name: str, default: int, lo: int = 0, hi: int = MAX_ID) -> int:
    v = c.params.get(name)
    if v is None or v == "":
        return default
    return ascii_int(v, name, lo, hi)


def when(value: Any, name: str, past: bool = True) -> float | None:
    """ISO 8601, POSIX seconds, or a duration ("24h": that long ago, or from now when not ``past``);
    "never" (no time) for a future time. Finite and within 1970..9999, else a 400 naming ``name``."""
    return parse_time(value, name, now=time.time(), past=past, allow_never=not past)


def p_choice(c: Call, name: str, choices: tuple[str, ...], default: str | None = None) -> str | None:
    v = c.params.get(name, default)
    if v is not None and v not in choices:
        raise ApiError(400, f"expected one of {', '.join(choices)}", name)
    return v


def address(c: Call, value: Any, name: str = "address") -> str:
    if not isinstance(value, str):
        raise ApiError(400, "expected an address string", name)
    try:
        return c.api.store.canonical(value)
    except AddressError as e:
        raise ApiError(400, str(e), name) from None


def suppression_filter(c: Call) -> q.SuppressionFilter:
    active = c.args.get("active", "true")
    prefix = c.args.get("prefix")
    if prefix and not c.api.cfg.suppression.local_part_case_sensitive:
        prefix = prefix.lower()
    return q.SuppressionFilter(
        reason=c.args.get("reason"),
        category=c.args.get("category"),
        tenant=c.args.get("tenant"),
        since=when(c.params.get("since"), "since"),
        until=when(c.params.get("until"), "until"),
        prefix=prefix or None,
        active=None if active == "all" else active == "true",
    )


def page(items: list[Any], nxt: int | None) -> dict[str, Any]:
    return {"items": items, "next_cursor": str(nxt) if nxt is not None else None}


# -- suppressions ---------------------------------------------------------------------------------


@inlineCallbacks
def list_suppressions(c: Call) -> Any:
    rows, nxt = yield c.api.run(
        q.page_suppressions,
        c.api.engine,
        suppression_filter(c),
        q.decode_cursor(c.params.get("cursor")),
        c.args.get("limit", 100),
    )
    return {"items": [q.suppression_dict(r) for r in rows], "next_cursor": q.encode_cursor(nxt)}


@inlineCallbacks
def get_suppression(c: Call) -> Any:
    addr = address(c, c.vars["address"])
    found = yield c.api.run(q.why, c.api.engine, addr)
    if found is None:
        raise ApiError(404, f"{addr} has never been suppressed", "address")
    return found


@inlineCallbacks
def add_suppression(c: Call) -> Any:
    data = c.body  # checked against schemas.ADD_SUPPRESSION
    addr = address(c, data["address"])
    tenant = data.get("tenant") or ""
    reason = data.get("reason") or "manual"
    expires = when(data.get("expires_at"), "expires_at", past=False)
    yield c.api.run(
        c.api.store.add,
        addr,
        tenant=tenant,
        reason=reason,
        category=data.get("category"),
        note=data.get("note"),
        source="api",
        expires_at=expires,
    )
    rows = yield c.api.run(c.api.store.get, addr)
    row = next(r for r in rows if r.tenant == tenant)
    return Reply(201, q.suppression_dict(row))


@inlineCallbacks
def remove_suppression(c: Call) -> Any:
    addr = address(c, c.vars["address"])
    tenant = c.args.get("tenant") or ""
    removed = yield c.api.run(c.api.store.remove, addr, tenant=tenant)
    if not removed:
        raise ApiError(404, f"{addr} is not suppressed" + (f" for tenant {tenant!r}" if tenant else ""), "address")
    return {"address": addr, "tenant": tenant, "removed": True}


def _jsonl_rows(fh: IO[str]) -> Iterator[dict[str, str]]:
    for lineno, line in enumerate(fh, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError) as e:
            raise ValueError(f"line {lineno}: not valid JSON: {e}") from None
        if not isinstance(obj, dict) or set(obj) - set(CSV_FIELDS):
            raise ValueError(f"line {lineno}: expected an object with keys among {', '.join(CSV_FIELDS)}")
        bad = next((k for k, v in obj.items() if isinstance(v, (dict, list, bool))), None)
        if bad is not None:
            raise ValueError(f"line {lineno}: {bad}: expected a string, a number or null")
        row = Line((k, "" if v is None else str(v)) for k, v in obj.items())
        row.line = lineno
        yield row


@inlineCallbacks
def import_suppressions(c: Call) -> Any:
    ctype = (c.request.getHeader(b"content-type") or b"").decode("latin-1").split(";")[0].strip()
    fmt = c.args.get("format") or ("jsonl" if ctype in ("application/x-ndjson", "application/jsonl") else "csv")
    kw: dict[str, Any] = {
        "default_reason": c.args.get("reason") or "imported",
        "default_tenant": c.args.get("tenant") or "",
        "default_expires": when(c.params.get("expires_at"), "expires_at", past=False),
        "source": "api",
    }

    def work() -> int:
        content: Any = c.request.content
        text = io.TextIOWrapper(content, encoding="utf-8", newline="")
        if fmt == "csv":
            return int(c.api.store.import_csv(text, **kw))
        return int(c.api.store.import_rows(_jsonl_rows(text), **kw))

    try:
        n = yield c.api.run(work)
    except ImportIncomplete as e:
        raise ApiError(500, str(e), "body") from None
    except (ValueError, UnicodeDecodeError, csv.Error) as e:  # nothing was written
        raise ApiError(400, str(e), "body") from None
    return {"imported": n}


def export_suppressions(c: Call) -> Any:
    from sidecar.http.export import ExportProducer

    fmt = c.args.get("format", "csv") or "csv"
    flt = suppression_filter(c)
    c.request.setHeader(b"content-type", b"text/csv; charset=utf-8" if fmt == "csv" else b"application/x-ndjson")
    c.request.setHeader(b"content-disposition", f'attachment; filename="suppressions.{fmt}"'.encode())
    ExportProducer(c.api, c.request, flt, fmt).start()
    return STREAMING


# -- events, messages, stats ----------------------------------------------------------------------


@inlineCallbacks
def list_events(c: Call) -> Any:
    kind = c.args.get("kind")
    addr = address(c, c.params["address"]) if c.params.get("address") else None
    flt = q.EventFilter(
        kind=kind,
        address=addr,
        tenant=c.args.get("tenant"),
        category=c.args.get("category"),
        since=when(c.params.get("since"), "since"),
        until=when(c.params.get("until"), "until"),
    )
    rows, nxt = yield c.api.run(q.page_events, c.api.engine, flt, c.args.get("cursor", 0), c.args.get("limit", 100))
    return page(rows, nxt)


@inlineCallbacks
def get_message(c: Call) -> Any:
    mid = c.args["id"]  # an integer (schemas.MESSAGE_ID)
    raw = yield c.api.run(q.raw_message, c.api.engine, mid)
    if raw is None:
        raise ApiError(404, f"no stored message {mid}", "id")
    return Reply(200, raw, b"message/rfc822")


@inlineCallbacks
def get_stats(c: Call) -> Any:
    now = time.time()
    since = when(c.params.get("since", "24h"), "since") or now - 86400
    until = when(c.params.get("until"), "until") or now
    if until <= since:
        raise ApiError(400, "must be later than since", "until")
    return (yield c.api.run(q.stats, c.api.engine, since, until))


# -- rate limits ----------------------------------------------------------------------------------


def _live_tats(c: Call, key: str) -> dict[str, float | None] | None:
    lim = c.api.limiter
    if lim is None:
        return None
    return {f"{key}#{i}": t for i, t in enumerate(lim.state.get(key) or ())}


def _redis_usage(cfg: Any, key: str) -> list[dict[str, Any]]:
    from sidecar.policy.redis_admin import redis_tats

    n = len(q.limit_usage(cfg, key, {}, None))
    tats, now = redis_tats(cfg, key, n)
    return q.limit_usage(cfg, key, tats, None, now)


@inlineCallbacks
def get_limit(c: Call) -> Any:
    key = c.vars["key"]  # checked as stored text by q.limit_usage
    if c.api.cfg.ratelimit.backend == "redis":  # the cluster-wide counters (blocking client, in the pool)
        windows = yield c.api.run(_redis_usage, c.api.cfg, key)
    else:
        windows = yield c.api.run(q.limit_usage, c.api.cfg, key, _live_tats(c, key), c.api.engine)
    return {"key": key, "windows": windows}


@inlineCallbacks
def reset_limit(c: Call) -> Any:
    from sidecar.store.counters import reset_key

    key = c.vars["key"]
    windows = len(q.limit_usage(c.api.cfg, key, {}, c.api.engine))  # validates the key
    n = yield c.api.run(reset_key, c.api.engine, key, time.time())
    if c.api.limiter is not None:
        c.api.limiter.reset(key)
    out = {"key": key, "reset": True, "rows": n}
    if c.api.cfg.ratelimit.backend == "redis":
        from sidecar.policy.redis_admin import redis_reset

        out["redis_keys"] = yield c.api.run(redis_reset, c.api.cfg, key, windows)
    return out


# -- webhooks -------------------------------------------------------------------------------------


@inlineCallbacks
def get_webhooks(c: Call) -> Any:
    subs = [
        {"name": s.name, "url": redact_url(s.url), "events": sorted(s.events)}
        for s in outbox.subscriptions(c.api.cfg.webhooks.subscriptions)
    ]
    summary = yield c.api.run(deliveries.summary, c.api.engine)
    cursors = yield c.api.run(deliveries.cursors, c.api.engine)
    return {"subscriptions": subs, "deliveries": summary, "cursors": cursors}


@inlineCallbacks
def list_deliveries(c: Call) -> Any:
    limit = c.args.get("limit", 100)
    rows = yield c.api.run(
        deliveries.list_deliveries,
        c.api.engine,
        subscription=c.args.get("subscription"),
        status=c.args.get("status"),
        event_type=c.args.get("event_type"),
        address=c.args.get("address"),
        after_id=c.args.get("cursor", 0),
        limit=limit + 1,
    )
    nxt = rows[limit - 1]["id"] if len(rows) > limit else None
    return page(rows[:limit], nxt)


@inlineCallbacks
def redeliver(c: Call) -> Any:
    data = c.body  # checked against schemas.REDELIVER
    n = yield c.api.run(
        deliveries.redeliver,
        c.api.engine,
        from_id=data["from_id"],
        to_id=data.get("to_id"),
        subscription=data.get("subscription"),
        status=data.get("status"),
        now=time.time(),
    )
    return {"queued": n}


def openapi(c: Call) -> Any:
    from sidecar.http.openapi import spec

    return spec(c.api.routes)


R, W = "read", "write"
# (method, path, scope, handler, summary, **contract): the contracts are in schemas.py
ROUTES: list[Route] = [
    Route(b"GET", ("openapi.json",), R, openapi, "This description", **S.OPENAPI_OP),
    Route(b"GET", ("suppressions",), R, list_suppressions, "List suppressions", **S.LIST_SUPPRESSIONS_OP),
    Route(b"POST", ("suppressions",), W, add_suppression, "Add (or update) a suppression", **S.ADD_SUPPRESSION_OP),
    Route(b"GET", ("suppressions", "export"), R, export_suppressions, "Export suppressions (streamed)", **S.EXPORT_OP),
    Route(
        b"POST",
        ("suppressions", "import"),
        W,
        import_suppressions,
        "Import suppressions (CSV or JSON lines)",
        **S.IMPORT_OP,
    ),  # fmt: skip
    Route(
        b"GET",
        ("suppressions", "{address}"),
        R,
        get_suppression,
        "One address: its suppressions and why",
        **S.WHY_OP,
    ),  # fmt: skip
    Route(
        b"DELETE",
        ("suppressions", "{address}"),
        W,
        remove_suppression,
        "Remove a suppression (reactivate)",
        **S.REMOVE_OP,
    ),  # fmt: skip
    Route(b"GET", ("events",), R, list_events, "List events", **S.EVENTS_OP),
    Route(b"GET", ("messages", "{id}"), R, get_message, "The raw stored message", **S.MESSAGE_OP),
    Route(b"GET", ("limits", "{key}"), R, get_limit, "Rate-limit use and remaining quota of a key", **S.LIMIT_OP),
    Route(b"DELETE", ("limits", "{key}"), W, reset_limit, "Reset a rate-limit key", **S.LIMIT_RESET_OP),
    Route(b"GET", ("stats",), R, get_stats, "Counts by category and tenant over a time window", **S.STATS_OP),
    Route(b"GET", ("webhooks",), R, get_webhooks, "Subscriptions, delivery counts and cursors", **S.WEBHOOKS_OP),
    Route(b"GET", ("webhooks", "deliveries"), R, list_deliveries, "List webhook deliveries", **S.DELIVERIES_OP),
    Route(
        b"POST",
        ("webhooks", "redeliver"),
        W,
        redeliver,
        "Send deliveries again from a delivery id",
        **S.REDELIVER_OP,
    ),  # fmt: skip
]
ROUTES += domains.ROUTES

from sidecar.http.reputation import ROUTES as _REPUTATION  # noqa: E402

ROUTES += _REPUTATION
