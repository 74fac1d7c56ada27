"""CLI for the operator's surface: every API operation, on the database directly or through the API.

``register(sub)`` adds ``events``, ``stats``, ``webhooks`` and the ``suppressions why`` action, and
gives the existing ``suppressions`` and ``limits`` actions ``--api URL`` / ``--token`` / ``--json``.
With ``--api`` (or SIDECAR_API_URL) the command calls the HTTP API; otherwise it uses the database.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

from sidecar.config import WEBHOOK_EVENTS, Config
from sidecar.http import operations as ops
from sidecar.webhooks import commands as wh

Op = Callable[[argparse.Namespace, Config], Any]


def _subactions(parser: argparse.ArgumentParser) -> Any:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))


def _api_opts(p: argparse.ArgumentParser, json_flag: bool = True) -> None:
    p.add_argument("--api", metavar="URL", default=os.environ.get("SIDECAR_API_URL"),
                   help="call the HTTP API at URL instead of the database (env SIDECAR_API_URL)")
    p.add_argument("--token", default=os.environ.get("SIDECAR_API_TOKEN"),
                   help="bearer token for --api (env SIDECAR_API_TOKEN)")
    if json_flag and not any(a.dest == "json" for a in p._actions):
        p.add_argument("--json", action="store_true", help="JSON output (one object per line for lists)")


def _page_opts(p: argparse.ArgumentParser, default: int | None = 100) -> None:
    p.add_argument("--limit", type=int, default=default, help=f"at most this many rows (default {default or 'all'})")
    p.add_argument("--cursor", help="start after this cursor (next_cursor of a previous page)")


def register(sub: Any) -> None:
    from sidecar.cli import _common

    def add(parent: Any, name: str, fn: Op, help: str, **kw: Any) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=help, description=help, **kw)
        _common(p)
        _api_opts(p)
        p.set_defaults(ops_handler=fn)
        return p

    ssub = _subactions(sub.choices["suppressions"])
    p = add(ssub, "why", ops.cmd_why, "show an address's suppressions and the events and messages that caused them")
    p.add_argument("address", metavar="ADDRESS")
    for name, fn in (("list", ops.cmd_sup_list), ("add", ops.cmd_sup_add), ("remove", ops.cmd_sup_remove),
                     ("import", ops.cmd_sup_import), ("export", ops.cmd_sup_export)):
        q = ssub.choices[name]
        _api_opts(q)
        q.set_defaults(ops_handler=fn)
    lst = ssub.choices["list"]
    lst.add_argument("--category", help="only this category")
    lst.add_argument("--since", help='created at or after (ISO 8601, or a duration like "7d" = that long ago)')
    lst.add_argument("--until", help="created before")
    lst.add_argument("--all", action="store_true", help="inactive (removed) rows too")
    ssub.choices["export"].add_argument("--format", choices=("csv", "jsonl"), default="csv")
    ssub.choices["import"].add_argument("--no-progress", action="store_true", help="no progress bar")
    lsub = _subactions(sub.choices["limits"])
    for name, fn in (("show", ops.cmd_limits_show), ("reset", ops.cmd_limits_reset)):
        _api_opts(lsub.choices[name])
        lsub.choices[name].set_defaults(ops_handler=fn)

    e = sub.add_parser("events", help="bounces, complaints, auto-replies, delays and rate-limit refusals")
    esub = e.add_subparsers(dest="events_command", metavar="ACTION", required=True)
    p = add(esub, "list", ops.cmd_events_list, "list events (oldest first)")
    p.add_argument("--kind", choices=("bounce", "delay", "complaint", "auto-reply", "delivered", "ratelimit"))
    for f in ("address", "tenant", "category", "since", "until"):
        p.add_argument(f"--{f}")
    _page_opts(p, None)
    p = add(esub, "message", ops.cmd_message, "print a stored raw message (as received)")
    p.add_argument("id", type=int, metavar="MESSAGE_ID")

    p = add(sub, "stats", ops.cmd_stats, "counts by kind, category and tenant over a time window")
    p.add_argument("--since", default="24h", help='start (ISO 8601 or a duration like "24h" = that long ago)')
    p.add_argument("--until", help="end (default now)")

    w = sub.add_parser("webhooks", help="webhook subscriptions and deliveries")
    wsub = w.add_subparsers(dest="webhooks_command", metavar="ACTION", required=True)
    add(wsub, "status", wh.cmd_wh_status, "subscriptions, delivery counts by status, feed cursors")
    p = add(wsub, "deliveries", wh.cmd_wh_deliveries, "list deliveries (dead letters: --status dead)")
    p.add_argument("--subscription")
    p.add_argument("--status", choices=("pending", "delivered", "dead"))
    p.add_argument("--event-type", choices=WEBHOOK_EVENTS)
    p.add_argument("--address")
    _page_opts(p, None)
    p = add(wsub, "redeliver", wh.cmd_wh_redeliver, "send deliveries again, from a delivery id (a cursor) on")
    p.add_argument("from_id", type=int, metavar="FROM_ID")
    p.add_argument("--to-id", type=int)
    p.add_argument("--subscription")
    p.add_argument("--status", choices=("delivered", "dead"), help="only these (default: both)")
