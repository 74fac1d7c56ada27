"""``sidecar suppressions why|list|add|remove|import|export``: on the database, or through the API with ``--api``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from sidecar.cli.admin import open_client, open_engine, open_store, option, paged, when
from sidecar.cli.output import emit, handled, progress
from sidecar.config import Config

SUP_COLS = ["address", "tenant", "reason", "category", "created_at", "expires_at"]
IMPORT_CHUNK_BYTES = 4 * 1024 * 1024


@handled
def cmd_why(args: argparse.Namespace, cfg: Config) -> int:
    from sidecar.http import queries

    if args.api:
        data = open_client(args).request("GET", "/suppressions/" + quote(args.address, safe="@"))
    else:
        store = open_store(cfg)
        data = queries.why(store.engine, store.canonical(args.address))
        if data is None:
            held = queries.withheld(store.engine, store.canonical(args.address))
            note = ", ".join(f"{n} {decision}" for decision, n in held.items())
            more = f" (events withheld: {note}; sidecar events list --address {args.address})" if held else ""
            print(f"sidecar: {args.address} has never been suppressed{more}", file=sys.stderr)
            return 1
    if args.json:
        print(json.dumps(data))
        return 0
    for s in data["suppressions"]:
        state = "ACTIVE" if s["active"] else "removed"
        print(
            f"{s['address']}  tenant={s['tenant'] or '(global)'}  {state}  reason={s['reason']}  "
            f"category={s['category'] or '-'}  source={s['source']}  since {s['created_at']}  "
            f"expires {s['expires_at'] or 'never'}"
        )
        for c in s["causes"]:
            m = c.get("message") or {}
            print(
                f"  caused by event {c['id']} {c['created_at']} {c['kind']} {c['status'] or ''} "
                f"{c['category'] or ''}: {(c['diagnostic'] or '')[:100]}"
            )
            if m:
                print(
                    f"    message {m['id']} queue_id={m['queue_id'] or '-'} received {m['received_at']} "
                    f"({m['size']} bytes): sidecar events message {m['id']}"
                )
        if not s["causes"]:
            print("  no recorded cause (added by hand, imported, or by the API)")
    print("history:")
    for h in data["history"]:
        print(f"  {h['at']}  {h['action']:8} tenant={h['tenant'] or '(global)'} {h['reason'] or ''}")
    return 0


@handled
def cmd_sup_list(args: argparse.Namespace, cfg: Config) -> int:
    from sidecar.http import queries

    params = {
        "tenant": args.tenant,
        "reason": args.reason,
        "prefix": args.prefix,
        "category": args.category,
        "since": args.since,
        "until": args.until,
        "active": "all" if args.all else "true",
    }
    f = queries.SuppressionFilter(
        reason=args.reason,
        category=args.category,
        tenant=args.tenant,
        since=when(args.since, "since"),
        until=when(args.until, "until"),
        prefix=args.prefix,
        active=None if args.all else True,
    )
    engine: Any = None if args.api else open_engine(cfg)

    def direct(after: Any, n: int) -> tuple[list[dict[str, Any]], Any]:
        rows, nxt = queries.page_suppressions(engine, f, after, n)
        return [queries.suppression_dict(r) for r in rows], nxt

    items = paged(args, "/suppressions", params, direct)
    emit(args, items, SUP_COLS + (["active"] if args.all else []))
    return 0


@handled
def cmd_sup_add(args: argparse.Namespace, cfg: Config) -> int:
    from sidecar.http.queries import suppression_dict
    from sidecar.suppression.address import canonical

    for name in ("tenant", "reason", "note"):  # every input checked before anything is written
        option(name, getattr(args, name))
    expires = when(args.expires, "expires", past=False)
    for a in args.addresses:
        canonical(a)
    out = []
    store = None if args.api else open_store(cfg)
    for a in args.addresses:
        if store is None:
            body = {
                "address": a,
                "tenant": args.tenant,
                "reason": args.reason,
                "note": args.note,
                "expires_at": args.expires,
            }
            out.append(open_client(args).request("POST", "/suppressions", body={k: v for k, v in body.items() if v}))
        else:
            store.add(a, tenant=args.tenant, reason=args.reason, source="cli", note=args.note, expires_at=expires)
            out.append(next(suppression_dict(r) for r in store.get(a) if r.tenant == args.tenant))
    for row in out:
        print(
            json.dumps(row)
            if args.json
            else f"suppressed {row['address']}" + (f" for tenant {row['tenant']}" if row["tenant"] else "")
        )
    return 0


@handled
def cmd_sup_remove(args: argparse.Namespace, cfg: Config) -> int:
    from sidecar.cli.api_client import ApiClientError

    status = 0
    for a in args.addresses:
        if args.api:
            try:
                open_client(args).request(
                    "DELETE", "/suppressions/" + quote(a, safe="@"), {"tenant": args.tenant or None}
                )
                ok = True
            except ApiClientError as e:
                if e.status != 404:
                    raise
                ok = False
        else:
            ok = open_store(cfg).remove(a, tenant=args.tenant)
        status = status or (0 if ok else 1)
        if args.json:
            print(json.dumps({"address": a, "tenant": args.tenant, "removed": ok}))
        elif ok:
            print(f"removed {a}")
        else:
            print(f"{a}: not suppressed" + (f" for tenant {args.tenant!r}" if args.tenant else ""), file=sys.stderr)
    return status


def _api_import(args: argparse.Namespace, fh: Any, show: Callable[[int], None] | None) -> int:
    """Through the API, in bodies of about IMPORT_CHUNK_BYTES: the whole file is checked here first
    (the server's own rules), so a bad line fails before anything is sent; should the server still
    refuse a body, the error says how many rows the earlier bodies imported."""
    import shutil
    import tempfile

    from sidecar.suppression.rows import CsvRows, check_rows

    if not fh.seekable():
        spool = tempfile.TemporaryFile("w+", newline="", encoding="utf-8")  # noqa: SIM115
        shutil.copyfileobj(fh, spool)
        fh = spool
    fh.seek(0)
    for _ in check_rows(CsvRows(fh), default_reason=args.reason, default_tenant=args.tenant, now=time.time()):
        pass
    fh.seek(0)
    params = {"reason": args.reason, "tenant": args.tenant or None, "expires_at": args.expires}
    return int(open_client(args).upload_csv("/suppressions/import", params, fh, IMPORT_CHUNK_BYTES, show))


@handled
def cmd_sup_import(args: argparse.Namespace, cfg: Config) -> int:
    option("tenant", args.tenant)
    option("reason", args.reason)
    expires = when(args.expires, "expires", past=False)
    show = None if args.no_progress else progress("imported")
    fh = sys.stdin if args.file == "-" else open(args.file, newline="", encoding="utf-8")  # noqa: SIM115
    t0 = time.monotonic()
    try:
        if args.api:
            n = _api_import(args, fh, show)
        else:
            n = open_store(cfg).import_csv(
                fh, default_reason=args.reason, default_tenant=args.tenant, default_expires=expires, progress=show
            )
    finally:
        if fh is not sys.stdin:
            fh.close()
    if args.json:
        print(json.dumps({"imported": n, "seconds": round(time.monotonic() - t0, 2)}))
    else:
        print(f"\nimported {n:,} suppressions in {time.monotonic() - t0:.1f}s", file=sys.stderr)
    return 0


@handled
def cmd_sup_export(args: argparse.Namespace, cfg: Config) -> int:
    from sidecar.http import queries

    out = sys.stdout.buffer if args.file == "-" else open(args.file, "wb")  # noqa: SIM115
    show = progress("exported") if args.file != "-" else None
    try:
        if args.api:
            n = open_client(args).download(
                "/suppressions/export", {"tenant": args.tenant, "reason": args.reason, "format": args.format}, out, show
            )
            n -= args.format == "csv"
        else:
            from sidecar.http.export import format_chunk

            engine, f = open_engine(cfg), queries.SuppressionFilter(reason=args.reason, tenant=args.tenant)
            after, n = 0, 0
            while True:
                rows = queries.export_chunk(engine, f, after, 10000)
                out.write(format_chunk(rows, args.format, header=after == 0))
                n += len(rows)
                if show:
                    show(n)
                if len(rows) < 10000:
                    break
                after = rows[-1][0]
    finally:
        if out is not sys.stdout.buffer:
            out.close()
    print(json.dumps({"exported": n}) if args.json else f"exported {n:,} suppressions", file=sys.stderr)
    return 0
