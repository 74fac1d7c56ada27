"""``sidecar webhooks status|deliveries|redeliver``: through the API (``--api``) or on the database."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from sidecar.cli.admin import open_client, open_engine, paged
from sidecar.cli.output import emit, handled, table
from sidecar.config import Config, redact_url

DELIVERY_COLS = ["id", "subscription", "event_type", "address", "status", "attempts", "last_attempt_at", "last_error"]


@handled
def cmd_wh_status(args: argparse.Namespace, cfg: Config) -> int:
    from sidecar.webhooks import deliveries, outbox

    if args.api:
        data = open_client(args).request("GET", "/webhooks")
    else:
        engine = open_engine(cfg)
        data = {
            "subscriptions": [
                {"name": s.name, "url": redact_url(s.url), "events": sorted(s.events)}
                for s in outbox.subscriptions(cfg.webhooks.subscriptions)
            ],
            "deliveries": deliveries.summary(engine),
            "cursors": deliveries.cursors(engine),
        }
    if args.json:
        print(json.dumps(data))
        return 0
    table([{**s, "events": ",".join(s["events"])} for s in data["subscriptions"]], ["name", "url", "events"])
    print()
    table(data["deliveries"], ["subscription", "status", "count", "oldest"])
    print()
    table(data["cursors"], ["subscription", "events_id", "changes_id", "updated_at"])
    return 0


@handled
def cmd_wh_deliveries(args: argparse.Namespace, cfg: Config) -> int:
    from sidecar.webhooks import deliveries

    params = {
        "subscription": args.subscription,
        "status": args.status,
        "event_type": args.event_type,
        "address": args.address,
    }
    engine: Any = None if args.api else open_engine(cfg)

    def direct(after: int, n: int) -> tuple[list[dict[str, Any]], int | None]:
        rows = deliveries.list_deliveries(
            engine,
            subscription=args.subscription,
            status=args.status,
            event_type=args.event_type,
            address=args.address,
            after_id=after,
            limit=n,
        )
        return rows, rows[-1]["id"] if len(rows) == n else None

    items = paged(args, "/webhooks/deliveries", params, direct)
    emit(args, items, DELIVERY_COLS)
    return 0


@handled
def cmd_wh_redeliver(args: argparse.Namespace, cfg: Config) -> int:
    from sidecar.webhooks import deliveries

    if args.api:
        body = {"from_id": args.from_id, "to_id": args.to_id, "subscription": args.subscription, "status": args.status}
        out = open_client(args).request(
            "POST", "/webhooks/redeliver", body={k: v for k, v in body.items() if v is not None}
        )
    else:
        out = {
            "queued": deliveries.redeliver(
                open_engine(cfg),
                from_id=args.from_id,
                to_id=args.to_id,
                subscription=args.subscription,
                status=args.status,
                now=time.time(),
            )
        }
    print(json.dumps(out) if args.json else f"queued {out['queued']} deliveries again")
    return 0
