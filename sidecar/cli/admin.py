"""The API's operations as CLI handlers (``sidecar.opscli`` registers them): each works through the
HTTP API when ``--api URL`` is given, or directly on the database otherwise, with the same output.

``--json`` prints JSON (one object per line for lists); otherwise tables for people.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import quote

from sidecar.config import Config

SUP_COLS = ["address", "tenant", "reason", "category", "created_at", "expires_at"]
EVENT_COLS = ["id", "created_at", "kind", "address", "tenant", "category", "status", "decision"]
IMPORT_CHUNK_BYTES = 4 * 1024 * 1024


def _client(args: argparse.Namespace) -> Any:
    from sidecar.http.client import ApiClient

    return ApiClient(args.api, args.token)


def _engine(cfg: Config) -> Any:
    from sidecar.commands import _engine as engine

    return engine(cfg)


def _store(cfg: Config) -> Any:
    from sidecar.suppression.store import SuppressionStore

    return SuppressionStore(_engine(cfg), case_sensitive_local=cfg.suppression.local_part_case_sensitive)


def _when(value: str | None, name: str, past: bool = True) -> float | None:
    """The API's time parser (sidecar.units) for an option; errors name the option."""
    from sidecar.units import InvalidValue, parse_time

    try:
        return parse_time(value, name, now=time.time(), past=past, allow_never=not past)
    except InvalidValue as e:
        raise ValueError(f"--{name}: {e.message}") from None


def _option(name: str, value: str | None, max_len: int | None = None) -> str | None:
    """A stored text option (--tenant, --reason, --note): no control characters; errors name the option."""
    from sidecar.suppression.fields import check_text
    from sidecar.units import InvalidValue

    try:
        return check_text(name, value, max_len)
    except InvalidValue as e:
        raise ValueError(f"--{name}: {e.message}") from None


def table(rows: Iterable[dict[str, Any]], cols: list[str]) -> None:
    cells = [{c: "-" if r.get(c) in (None, "") else str(r.get(c)) for c in cols} for r in rows]
    width = {c: min(max([len(c)] + [len(r[c]) for r in cells]), 48) for c in cols}
    print("  ".join(c.upper().ljust(width[c]) for c in cols).rstrip())
    for r in cells:
        print("  ".join(r[c][:width[c]].ljust(width[c]) for c in cols).rstrip())


def emit(args: argparse.Namespace, data: Any, cols: list[str] | None = None) -> None:
    """--json: one JSON object per line (an iterator is streamed); else a table for people."""
    items = data if isinstance(data, (list, Iterator)) else [data]
    if args.json:
        for item in items:
            print(json.dumps(item))
    elif cols is not None:
        table(list(items), cols)
    else:
        print(json.dumps(data, indent=2))


def progress(label: str, every: int = 10000) -> Callable[[int], None]:
    t0, tty, last = time.monotonic(), sys.stderr.isatty(), [0]

    def show(n: int) -> None:
        if n - last[0] < every:
            return
        last[0] = n
        line = f"{label}: {n:,} rows ({n / max(time.monotonic() - t0, 1e-6):,.0f}/s)"
        print(("\r" + line) if tty else line, end="" if tty else "\n", file=sys.stderr, flush=True)

    return show


def handled(fn: Callable[[argparse.Namespace, Config], int]) -> Callable[[argparse.Namespace, Config], int]:
    """Errors become one line on stderr: exit 1 for "not found"/unreachable, 2 for bad input."""
    def run(args: argparse.Namespace, cfg: Config) -> int:
        from sidecar.http.client import ApiClientError
        from sidecar.http.queries import InvalidParameter

        try:
            return fn(args, cfg)
        except ApiClientError as e:
            print(f"sidecar: {e}", file=sys.stderr)
            return 1 if e.status in (0, 404) else 2
        except (InvalidParameter, ValueError) as e:
            print(f"sidecar: {e}", file=sys.stderr)
            return 2

    run.__name__ = fn.__name__
    return run


def _paged(args: argparse.Namespace, path: str, params: dict[str, Any],
           direct: Callable[[Any, int], tuple[list[dict[str, Any]], Any]]) -> Iterator[dict[str, Any]]:
    """Items of a list, through the API or from ``direct(after, limit)`` pages."""
    from sidecar.http.queries import decode_cursor

    if args.api:
        yield from _client(args).pages(path, {**params, "cursor": getattr(args, "cursor", None)}, args.limit)
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


# -- suppressions ---------------------------------------------------------------------------------


@handled
def cmd_why(args: argparse.Namespace, cfg: Config) -> int:
    from sidecar.http import queries

    if args.api:
        data = _client(args).request("GET", "/suppressions/" + quote(args.address, safe="@"))
    else:
        store = _store(cfg)
        data = queries.why(store.engine, store.canonical(args.address))
        if data is None:
            print(f"sidecar: {args.address} has never been suppressed", file=sys.stderr)
            return 1
    if args.json:
        print(json.dumps(data))
        return 0
    for s in data["suppressions"]:
        state = "ACTIVE" if s["active"] else "removed"
        print(f"{s['address']}  tenant={s['tenant'] or '(global)'}  {state}  reason={s['reason']}  "
              f"category={s['category'] or '-'}  source={s['source']}  since {s['created_at']}  "
              f"expires {s['expires_at'] or 'never'}")
        for c in s["causes"]:
            m = c.get("message") or {}
            print(f"  caused by event {c['id']} {c['created_at']} {c['kind']} {c['status'] or ''} "
                  f"{c['category'] or ''}: {(c['diagnostic'] or '')[:100]}")
            if m:
                print(f"    message {m['id']} queue_id={m['queue_id'] or '-'} received {m['received_at']} "
                      f"({m['size']} bytes): sidecar events message {m['id']}")
        if not s["causes"]:
            print("  no recorded cause (added by hand, imported, or by the API)")
    print("history:")
    for h in data["history"]:
        print(f"  {h['at']}  {h['action']:8} tenant={h['tenant'] or '(global)'} {h['reason'] or ''}")
    return 0


@handled
def cmd_sup_list(args: argparse.Namespace, cfg: Config) -> int:
    from sidecar.http import queries

    params = {"tenant": args.tenant, "reason": args.reason, "prefix": args.prefix, "category": args.category,
              "since": args.since, "until": args.until, "active": "all" if args.all else "true"}
    f = queries.SuppressionFilter(reason=args.reason, category=args.category, tenant=args.tenant,
                                  since=_when(args.since, "since"), until=_when(args.until, "until"),
                                  prefix=args.prefix, active=None if args.all else True)
    engine: Any = None if args.api else _engine(cfg)

    def direct(after: Any, n: int) -> tuple[list[dict[str, Any]], Any]:
        rows, nxt = queries.page_suppressions(engine, f, after, n)
        return [queries.suppression_dict(r) for r in rows], nxt

    items = _paged(args, "/suppressions", params, direct)
    emit(args, items, SUP_COLS + (["active"] if args.all else []))
    return 0


@handled
def cmd_sup_add(args: argparse.Namespace, cfg: Config) -> int:
    from sidecar.http.queries import suppression_dict
    from sidecar.suppression.address import canonical

    for name in ("tenant", "reason", "note"):   # every input checked before anything is written
        _option(name, getattr(args, name))
    expires = _when(args.expires, "expires", past=False)
    for a in args.addresses:
        canonical(a)
    out = []
    store = None if args.api else _store(cfg)
    for a in args.addresses:
        if store is None:
            body = {"address": a, "tenant": args.tenant, "reason": args.reason, "note": args.note,
                    "expires_at": args.expires}
            out.append(_client(args).request("POST", "/suppressions", body={k: v for k, v in body.items() if v}))
        else:
            store.add(a, tenant=args.tenant, reason=args.reason, source="cli", note=args.note, expires_at=expires)
            out.append(next(suppression_dict(r) for r in store.get(a) if r.tenant == args.tenant))
    for row in out:
        print(json.dumps(row) if args.json else
              f"suppressed {row['address']}" + (f" for tenant {row['tenant']}" if row["tenant"] else ""))
    return 0


@handled
def cmd_sup_remove(args: argparse.Namespace, cfg: Config) -> int:
    from sidecar.http.client import ApiClientError

    status = 0
    for a in args.addresses:
        if args.api:
            try:
                _client(args).request("DELETE", "/suppressions/" + quote(a, safe="@"), {"tenant": args.tenant or None})
                ok = True
            except ApiClientError as e:
                if e.status != 404:
                    raise
                ok = False
        else:
            ok = _store(cfg).remove(a, tenant=args.tenant)
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
    return int(_client(args).upload_csv("/suppressions/import", params, fh, IMPORT_CHUNK_BYTES, show))


@handled
def cmd_sup_import(args: argparse.Namespace, cfg: Config) -> int:
    _option("tenant", args.tenant)
    _option("reason", args.reason)
    expires = _when(args.expires, "expires", past=False)
    show = None if args.no_progress else progress("imported")
    fh = sys.stdin if args.file == "-" else open(args.file, newline="", encoding="utf-8")  # noqa: SIM115
    t0 = time.monotonic()
    try:
        if args.api:
            n = _api_import(args, fh, show)
        else:
            n = _store(cfg).import_csv(fh, default_reason=args.reason, default_tenant=args.tenant,
                                       default_expires=expires, progress=show)
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
            n = _client(args).download("/suppressions/export", {"tenant": args.tenant, "reason": args.reason,
                                                                "format": args.format}, out, show)
            n -= args.format == "csv"
        else:
            from sidecar.http.export import format_chunk

            engine, f = _engine(cfg), queries.SuppressionFilter(reason=args.reason, tenant=args.tenant)
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


# -- rate limits, events, stats -------------------------------------------------------------------


@handled
def cmd_limits_show(args: argparse.Namespace, cfg: Config) -> int:
    from sidecar.http import queries

    if args.api:
        windows = _client(args).request("GET", "/limits/" + quote(args.key, safe=""))["windows"]
    elif cfg.ratelimit.backend == "redis":   # cluster-wide counters live in Redis, not the database
        from sidecar.commands import _redis_tats

        n = len(queries.limit_usage(cfg, args.key, {}, None))   # validates the key
        tats, now = _redis_tats(cfg, args.key, n)
        windows = queries.limit_usage(cfg, args.key, tats, None, now)
    else:
        windows = queries.limit_usage(cfg, args.key, None, _engine(cfg))
    if args.json:   # one JSON list, as before the API existed
        print(json.dumps(windows))
    for w in [] if args.json else windows:
        print(f"{w['key']}  {w['window']} (+{w['burst']} burst): used {w['used']}, remaining {w['remaining']}")
    return 0


@handled
def cmd_limits_reset(args: argparse.Namespace, cfg: Config) -> int:
    from sidecar.http import queries
    from sidecar.store.counters import reset_key

    if args.api:
        out = _client(args).request("DELETE", "/limits/" + quote(args.key, safe=""))
    else:
        engine = _engine(cfg)
        n = len(queries.limit_usage(cfg, args.key, {}, engine))
        out = {"key": args.key, "reset": True, "rows": reset_key(engine, args.key, time.time())}
        if cfg.ratelimit.backend == "redis":
            from sidecar.commands import _redis_reset

            out["redis_keys"] = _redis_reset(cfg, args.key, n)
    print(json.dumps(out) if args.json else
          f"reset {args.key} ({out['rows']} counter rows cleared; running servers apply it within a second)")
    return 0


@handled
def cmd_events_list(args: argparse.Namespace, cfg: Config) -> int:
    from sidecar.http import queries

    params = {k: getattr(args, k) for k in ("kind", "address", "tenant", "category", "since", "until")}
    engine: Any = None if args.api else _engine(cfg)
    addr = _store(cfg).canonical(args.address) if args.address and not args.api else args.address
    f = queries.EventFilter(kind=args.kind, address=addr, tenant=args.tenant, category=args.category,
                            since=_when(args.since, "since"), until=_when(args.until, "until"))
    items = _paged(args, "/events", params, lambda after, n: queries.page_events(engine, f, after, n))
    emit(args, items, EVENT_COLS)
    return 0


@handled
def cmd_message(args: argparse.Namespace, cfg: Config) -> int:
    from sidecar.http import queries

    if not 0 <= args.id <= 2**62:
        raise ValueError(f"MESSAGE_ID: expected an integer from 0 to {2**62}")
    raw = (_client(args).request("GET", f"/messages/{args.id}") if args.api
           else queries.raw_message(_engine(cfg), args.id))
    if raw is None:
        print(f"sidecar: no stored message {args.id}", file=sys.stderr)
        return 1
    sys.stdout.buffer.write(raw)
    return 0


@handled
def cmd_stats(args: argparse.Namespace, cfg: Config) -> int:
    from sidecar.http import queries

    if args.api:
        data = _client(args).request("GET", "/stats", {"since": args.since, "until": args.until})
    else:
        since = _when(args.since, "since") or 0.0
        data = queries.stats(_engine(cfg), since, _when(args.until, "until") or time.time())
    if args.json:
        print(json.dumps(data))
        return 0
    print(f"{data['since']} .. {data['until']}: {data['active_suppressions']:,} active suppressions")
    print("\nevents:")
    table(data["events"], ["kind", "category", "tenant", "count"])
    print("\nsuppressions added:")
    table(data["suppressions_added"], ["category", "tenant", "count"])
    return 0
