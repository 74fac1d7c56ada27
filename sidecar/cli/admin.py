"""The operator's commands (limits, events, stats, message) and what every database-or-``--api``
command shares: each works through the HTTP API when ``--api URL`` is given, or directly on the
database otherwise, with the same output. The suppressions actions are in :mod:`sidecar.cli.suppressions`,
the webhooks ones in :mod:`sidecar.cli.webhooks`.

``--json`` prints JSON (one object per line for lists); otherwise tables for people.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

from sidecar.cli.output import emit, handled, table
from sidecar.config import Config

EVENT_COLS = ["id", "created_at", "kind", "address", "tenant", "category", "status", "decision"]


def open_client(args: argparse.Namespace) -> Any:
    from sidecar.cli.api_client import ApiClient

    return ApiClient(args.api, args.token)


def open_engine(cfg: Config) -> Any:
    from sidecar.cli.serve import upgraded_engine

    return upgraded_engine(cfg)


def open_store(cfg: Config) -> Any:
    from sidecar.suppression.store import SuppressionStore

    return SuppressionStore(open_engine(cfg), case_sensitive_local=cfg.suppression.local_part_case_sensitive)


def when(value: str | None, name: str, past: bool = True) -> float | None:
    """The API's time parser (sidecar.units) for an option; errors name the option."""
    from sidecar.units import InvalidValue, parse_time

    try:
        return parse_time(value, name, now=time.time(), past=past, allow_never=not past)
    except InvalidValue as e:
        raise ValueError(f"--{name}: {e.message}") from None


def option(name: str, value: str | None, max_len: int | None = None) -> str | None:
    """A stored text option (--tenant, --reason, --note): no control characters; errors name the option."""
    from sidecar.suppression.fields import check_text
    from sidecar.units import InvalidValue

    try:
        return check_text(name, value, max_len)
    except InvalidValue as e:
        raise ValueError(f"--{name}: {e.message}") from None


def paged(
    args: argparse.Namespace,
    path: str,
    params: dict[str, Any],
    direct: Callable[[Any, int], tuple[list[dict[str, Any]], Any]],
) -> Iterator[dict[str, Any]]:
    """Items of a list, through the API or from ``direct(after, limit)`` pages."""
    from sidecar.http.queries import decode_cursor

    if args.api:
        yield from open_client(args).pages(path, {**params, "cursor": getattr(args, "cursor", None)}, args.limit)
        return
    after = decode_cursor(getattr(args, "cursor", None))
    n = 0
    while args.limit is None or n < args.limit:
        want = 1000 if args.limit is None else min(1000, args.limit - n)
        items, nxt = direct(after, want)
        yield from items
        n += len(items)
        if nxt is None:
            return
        after = nxt


# -- rate limits, events, stats -------------------------------------------------------------------


@handled
def cmd_limits_show(args: argparse.Namespace, cfg: Config) -> int:
    from sidecar.http import queries

    if args.api:
        windows = open_client(args).request("GET", "/limits/" + quote(args.key, safe=""))["windows"]
    elif cfg.ratelimit.backend == "redis":  # cluster-wide counters live in Redis, not the database
        from sidecar.policy.redis_admin import redis_tats

        n = len(queries.limit_usage(cfg, args.key, {}, None))  # validates the key
        tats, now = redis_tats(cfg, args.key, n)
        windows = queries.limit_usage(cfg, args.key, tats, None, now)
    else:
        windows = queries.limit_usage(cfg, args.key, None, open_engine(cfg))
    if args.json:  # one JSON list, as before the API existed
        print(json.dumps(windows))
    for w in [] if args.json else windows:
        print(f"{w['key']}  {w['window']} (+{w['burst']} burst): used {w['used']}, remaining {w['remaining']}")
    return 0


@handled
def cmd_limits_reset(args: argparse.Namespace, cfg: Config) -> int:
    from sidecar.http import queries
    from sidecar.store.counters import reset_key

    if args.api:
        out = open_client(args).request("DELETE", "/limits/" + quote(args.key, safe=""))
    else:
        engine = open_engine(cfg)
        n = len(queries.limit_usage(cfg, args.key, {}, engine))
        out = {"key": args.key, "reset": True, "rows": reset_key(engine, args.key, time.time())}
        if cfg.ratelimit.backend == "redis":
            from sidecar.policy.redis_admin import redis_reset

            out["redis_keys"] = redis_reset(cfg, args.key, n)
    print(
        json.dumps(out)
        if args.json
        else f"reset {args.key} ({out['rows']} counter rows cleared; running servers apply it within a second)"
    )
    return 0


@handled
def cmd_events_list(args: argparse.Namespace, cfg: Config) -> int:
    from sidecar.http import queries

    params = {k: getattr(args, k) for k in ("kind", "address", "tenant", "category", "since", "until")}
    engine: Any = None if args.api else open_engine(cfg)
    addr = open_store(cfg).canonical(args.address) if args.address and not args.api else args.address
    f = queries.EventFilter(
        kind=args.kind,
        address=addr,
        tenant=args.tenant,
        category=args.category,
        since=when(args.since, "since"),
        until=when(args.until, "until"),
    )
    items = paged(args, "/events", params, lambda after, n: queries.page_events(engine, f, after, n))
    emit(args, items, EVENT_COLS)
    return 0


@handled
def cmd_message(args: argparse.Namespace, cfg: Config) -> int:
    from sidecar.http import queries

    if not 0 <= args.id <= 2**62:
        raise ValueError(f"MESSAGE_ID: expected an integer from 0 to {2**62}")
    raw = (
        open_client(args).request("GET", f"/messages/{args.id}")
        if args.api
        else queries.raw_message(open_engine(cfg), args.id)
    )
    if raw is None:
        print(f"sidecar: no stored message {args.id}", file=sys.stderr)
        return 1
    sys.stdout.buffer.write(raw)
    return 0


@handled
def cmd_stats(args: argparse.Namespace, cfg: Config) -> int:
    from sidecar.http import queries

    if args.api:
        data = open_client(args).request("GET", "/stats", {"since": args.since, "until": args.until})
    else:
        since = when(args.since, "since") or 0.0
        data = queries.stats(open_engine(cfg), since, when(args.until, "until") or time.time())
    if args.json:
        print(json.dumps(data))
        return 0
    print(f"{data['since']} .. {data['until']}: {data['active_suppressions']:,} active suppressions")
    print("\nevents:")
    table(data["events"], ["kind", "category", "tenant", "count"])
    print("\nsuppressions added:")
    table(data["suppressions_added"], ["category", "tenant", "count"])
    return 0
