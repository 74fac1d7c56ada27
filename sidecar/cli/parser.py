"""The ``sidecar`` argument parser: every subcommand, its options and its handler.

Each subcommand sets ``handler`` (``handler(args, cfg) -> exit code``), except the bounce commands
(ingest, parse, import, replay: :mod:`sidecar.cli.bounces`), which load the configuration themselves.
Commands with ``--api URL`` (or SIDECAR_API_URL) call the HTTP API; otherwise they use the database.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

from sidecar.cli import admin, recipients, serve
from sidecar.cli import domains as dom
from sidecar.cli import reputation as rep
from sidecar.cli import suppressions as sup
from sidecar.cli import webhooks as wh
from sidecar.config import WEBHOOK_EVENTS, Config

Handler = Callable[[argparse.Namespace, Config], int]

DESCRIPTION = """\
postfix-sidecar: suppression, rate limits and bounce handling beside Postfix.

Typical use:
  sidecar serve --config /etc/postfix-sidecar/sidecar.toml   policy server + HTTP (/metrics, /healthz)
  sidecar check-config --config FILE                         validate a configuration file
  sidecar postfix-config --config FILE                       print the main.cf / master.cf lines to paste
  sidecar ingest ...                                          the pipe(8) bounce command (see docs/postfix.md)
  sidecar suppressions list|add|remove|import|export|why     manage the suppression list
  sidecar limits show|reset KEY                              inspect or clear a rate-limit key
  sidecar events list / stats / webhooks deliveries          what happened, counts, webhook deliveries
  sidecar recipients check ADDRESS                           did we send to ADDRESS (the record of recipients)
  sidecar check-domain DOMAIN --relay-ip IP                  SPF, DKIM, DMARC, PTR, blocklists: a health report
  sidecar reputation list|show|release|set-level|exempt      reputation levels per tenant

The configuration file is --config FILE, else $SIDECAR_CONFIG, else
/etc/postfix-sidecar/sidecar.toml. Without any, a command runs on the built-in defaults only
when given --db URL (or --api URL); otherwise it exits 78 saying where it looked. Only serve
and db upgrade create a database. Every command that touches the database takes --db URL
(SQLAlchemy URL, e.g. sqlite:///var/sidecar.db or postgresql://user@host/db).
"""


def common(p: argparse.ArgumentParser, db: bool = True) -> None:
    p.add_argument(
        "--config",
        "-c",
        metavar="FILE",
        help="TOML configuration file (default: $SIDECAR_CONFIG, else /etc/postfix-sidecar/sidecar.toml)",
    )
    if db:
        p.add_argument("--db", metavar="URL", help="database URL; overrides database.url from the config")


def _api_opts(p: argparse.ArgumentParser, json_flag: bool = True) -> None:
    p.add_argument(
        "--api",
        metavar="URL",
        default=os.environ.get("SIDECAR_API_URL"),
        help="call the HTTP API at URL instead of the database (env SIDECAR_API_URL)",
    )
    p.add_argument(
        "--token", default=os.environ.get("SIDECAR_API_TOKEN"), help="bearer token for --api (env SIDECAR_API_TOKEN)"
    )
    if json_flag and not any(a.dest == "json" for a in p._actions):
        p.add_argument("--json", action="store_true", help="JSON output (one object per line for lists)")


def _page_opts(p: argparse.ArgumentParser, default: int | None = 100) -> None:
    p.add_argument("--limit", type=int, default=default, help=f"at most this many rows (default {default or 'all'})")
    p.add_argument("--cursor", help="start after this cursor (next_cursor of a previous page)")


def _add(parent: Any, name: str, fn: Handler, help: str, **kw: Any) -> argparse.ArgumentParser:
    """A database-or-API command: --config, --db, --api, --token, --json."""
    p = parent.add_parser(name, help=help, description=help, **kw)
    common(p)
    _api_opts(p)
    p.set_defaults(handler=fn)
    return p


def _db_backup(args: argparse.Namespace, cfg: Config) -> int:
    from sidecar.cli.backup import cmd_db_backup

    return cmd_db_backup(args, cfg)


def _global_opts(ap: argparse.ArgumentParser) -> None:
    from sidecar import __version__
    from sidecar.cli.files import SHIPPED

    ap.add_argument("--version", action="version", version=f"sidecar (postfix-sidecar) {__version__}")
    ap.add_argument(
        "--print-file",
        choices=sorted(SHIPPED),
        metavar="NAME",
        help="print a file shipped with the package and exit: " + ", ".join(sorted(SHIPPED)),
    )


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="sidecar", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    ap.add_argument("--log-format", choices=("text", "json"), help="text or json lines (default: logging.format)")
    _global_opts(ap)
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "serve",
        help="run the policy server and the HTTP listener",
        description="Run the policy server (Postfix check_policy_service), the HTTP listener "
        "(/metrics, /healthz), the ingest hand-off socket and, when ingest.lmtp is set, the LMTP "
        "listener Postfix's lmtp(8) client delivers bounces to. Upgrades the schema first.",
    )
    common(p)
    p.add_argument(
        "--policy",
        action="append",
        metavar="ENDPOINT",
        help="policy listener, a Twisted endpoint (repeatable), e.g. tcp:10031:interface=127.0.0.1",
    )
    p.add_argument("--http", metavar="ENDPOINT", help="HTTP listener endpoint, e.g. tcp:9731:interface=127.0.0.1")
    p.set_defaults(handler=serve.cmd_serve)

    p = sub.add_parser(
        "check-config",
        help="validate a configuration file and exit",
        description="Load and validate the configuration; exit 0 if good, 78 with the key path of the problem if not.",
    )
    common(p, db=False)
    p.set_defaults(handler=serve.cmd_check_config)

    p = sub.add_parser("postfix-config", help="print the Postfix main.cf and master.cf lines for this config")
    common(p, db=False)
    p.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help='text (default): the lines to paste; json: {"main.cf": TEXT, "main.cf parameters": '
        '{NAME: VALUE}, "master.cf": TEXT} for deployment tools',
    )
    p.set_defaults(handler=serve.cmd_postfix_config)

    p = sub.add_parser("db", help="database schema")
    dsub = p.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    q = dsub.add_parser("upgrade", help="create or upgrade the schema to the current version")
    common(q)
    q.set_defaults(handler=serve.cmd_db_upgrade)
    q = dsub.add_parser(
        "backup",
        help="copy the SQLite database to PATH while the service runs (the online backup API)",
        description="A consistent single-file copy of the SQLite database, taken with SQLite's online backup "
        "API while the service runs (not a file copy, which can miss the WAL). PostgreSQL: use pg_dump.",
    )
    common(q)
    q.add_argument("path", metavar="PATH", help="the copy to write (refused if it exists, unless --force)")
    q.add_argument("--force", action="store_true", help="replace PATH if it exists")
    q.set_defaults(handler=_db_backup)

    p = sub.add_parser("suppressions", help="manage the suppression list")
    ssub = p.add_subparsers(dest="sup_command", metavar="ACTION", required=True)
    q = ssub.add_parser("add", help="suppress addresses")
    common(q)
    q.add_argument("addresses", nargs="+", metavar="ADDRESS")
    q.add_argument("--reason", default="manual", help="reason shown in the reject reply (default: manual)")
    q.add_argument("--tenant", default="", help="scope to this tenant (SASL user or sender domain); default global")
    q.add_argument("--expires", metavar="WHEN", help='expiry: a duration ("30d") or ISO 8601 time; default never')
    q.add_argument("--note", help="free text kept with the suppression")
    _api_opts(q)
    q.set_defaults(handler=sup.cmd_sup_add)
    q = ssub.add_parser("remove", help="reactivate addresses (history is kept)")
    common(q)
    q.add_argument("addresses", nargs="+", metavar="ADDRESS")
    q.add_argument("--tenant", default="", help="the tenant scope to remove from (default global)")
    _api_opts(q)
    q.set_defaults(handler=sup.cmd_sup_remove)
    q = ssub.add_parser("list", help="list active suppressions")
    common(q)
    q.add_argument("--tenant", help="only this tenant ('' = global only)")
    q.add_argument("--reason", help="only this reason")
    q.add_argument("--prefix", help="only addresses starting with this")
    q.add_argument("--limit", type=int, default=None, help="at most this many rows")
    q.add_argument("--json", action="store_true", help="one JSON object per line")
    _api_opts(q)
    q.add_argument("--category", help="only this category")
    q.add_argument("--since", help='created at or after (ISO 8601, or a duration like "7d" = that long ago)')
    q.add_argument("--until", help="created before")
    q.add_argument("--all", action="store_true", help="inactive (removed) rows too")
    q.set_defaults(handler=sup.cmd_sup_list)
    q = ssub.add_parser(
        "import",
        help="import suppressions from CSV",
        description="CSV with a header line; columns: address (required), tenant, reason, category, "
        "created_at, expires_at, source, note. '-' reads stdin.",
    )
    common(q)
    q.add_argument("file", metavar="FILE.csv")
    q.add_argument("--reason", default="imported", help="reason for rows without one")
    q.add_argument("--tenant", default="", help="tenant for rows without one")
    q.add_argument("--expires", metavar="WHEN", help="expiry for rows without one")
    _api_opts(q)
    q.add_argument("--no-progress", action="store_true", help="no progress bar")
    q.set_defaults(handler=sup.cmd_sup_import)
    q = ssub.add_parser("export", help="export active suppressions as CSV ('-' = stdout)")
    common(q)
    q.add_argument("file", metavar="FILE.csv", nargs="?", default="-")
    q.add_argument("--tenant", help="only this tenant")
    q.add_argument("--reason", help="only this reason")
    _api_opts(q)
    q.add_argument("--format", choices=("csv", "jsonl"), default="csv")
    q.set_defaults(handler=sup.cmd_sup_export)
    q = _add(ssub, "why", sup.cmd_why, "show an address's suppressions and the events and messages that caused them")
    q.add_argument("address", metavar="ADDRESS")

    p = sub.add_parser("limits", help="inspect or reset rate-limit keys")
    lsub = p.add_subparsers(dest="limits_command", metavar="ACTION", required=True)
    for name, text in (("show", "print use and remaining quota for KEY"), ("reset", "clear the counters of KEY")):
        q = lsub.add_parser(
            name,
            help=text,
            description=text + ". KEY is RULE:VALUE, e.g. per-user:alice (several key parts joined with '|').",
        )
        common(q)
        q.add_argument("key", metavar="KEY")
        if name == "show":
            q.add_argument("--json", action="store_true")
        _api_opts(q)
        q.set_defaults(handler=admin.cmd_limits_show if name == "show" else admin.cmd_limits_reset)

    # Bounce handling: sidecar.cli.bounces (run without loading the configuration first).
    p = sub.add_parser(
        "ingest",
        help="read one bounce on stdin (the pipe(8) command)",
        description="Read one message on stdin, as Postfix's pipe(8) delivers it, parse it and "
        "record events and suppressions. Exit 0 once stored (or deliberately set aside); "
        "75 on any transient or internal failure so Postfix keeps the message and retries.",
    )
    common(p)
    p.add_argument("--sender", default="", help="envelope sender (${sender})")
    p.add_argument("--recipient", default="", help="envelope recipient (${recipient})")
    p.add_argument("--queue-id", default="", help="Postfix queue id (${queue_id})")
    p.add_argument("--extension", default="", help="address extension, the VERP token (${extension})")
    p.add_argument(
        "--socket",
        metavar="PATH",
        help="the running service's hand-off socket (default: ingest.socket from the config)",
    )
    p.add_argument("--no-handoff", action="store_true", help="do not hand the message to the running service")

    p = sub.add_parser("parse", help="parse bounces and print the failed recipients (no database)")
    p.add_argument("files", nargs="*", metavar="FILE", help="messages to parse; stdin when none")
    p.add_argument("--json", action="store_true", help="JSON output")
    p.add_argument("--paths-from-stdin", action="store_true", help="read file paths from stdin, one per line")
    p.add_argument(
        "--explain",
        action="store_true",
        help="per recipient, the signals that decided the address, the category and hard/soft",
    )

    p = sub.add_parser("import", help="import historical bounces from an mbox or Maildir")
    common(p)
    p.add_argument("path", metavar="PATH")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--require-record",
        action="store_true",
        help="suppress only addresses a VERP token or the record of recipients confirms (as the pipe)",
    )

    p = sub.add_parser("replay", help="re-run parsing and the suppression policy over stored messages")
    common(p)
    p.add_argument("--apply", action="store_true", help="apply the changes (default: only show them)")
    p.add_argument("--state", choices=("all", "unparsed", "parsed"), default="all")
    p.add_argument("--json", action="store_true")

    e = sub.add_parser("events", help="bounces, complaints, auto-replies, delays and rate-limit refusals")
    esub = e.add_subparsers(dest="events_command", metavar="ACTION", required=True)
    p = _add(esub, "list", admin.cmd_events_list, "list events (oldest first)")
    p.add_argument(
        "--kind",
        choices=("bounce", "delay", "complaint", "auto-reply", "delivered", "ratelimit", "domain", "reputation"),
    )
    for f in ("address", "tenant", "category", "since", "until"):
        p.add_argument(f"--{f}")
    _page_opts(p, None)
    p = _add(esub, "message", admin.cmd_message, "print a stored raw message (as received)")
    p.add_argument("id", type=int, metavar="MESSAGE_ID")

    p = _add(sub, "stats", admin.cmd_stats, "counts by kind, category and tenant over a time window")
    p.add_argument("--since", default="24h", help='start (ISO 8601 or a duration like "24h" = that long ago)')
    p.add_argument("--until", help="end (default now)")

    w = sub.add_parser("webhooks", help="webhook subscriptions and deliveries")
    wsub = w.add_subparsers(dest="webhooks_command", metavar="ACTION", required=True)
    _add(wsub, "status", wh.cmd_wh_status, "subscriptions, delivery counts by status, feed cursors")
    p = _add(wsub, "deliveries", wh.cmd_wh_deliveries, "list deliveries (dead letters: --status dead)")
    p.add_argument("--subscription")
    p.add_argument("--status", choices=("pending", "delivered", "dead"))
    p.add_argument("--event-type", choices=WEBHOOK_EVENTS)
    p.add_argument("--address")
    _page_opts(p, None)
    p = _add(wsub, "redeliver", wh.cmd_wh_redeliver, "send deliveries again, from a delivery id (a cursor) on")
    p.add_argument("from_id", type=int, metavar="FROM_ID")
    p.add_argument("--to-id", type=int)
    p.add_argument("--subscription")
    p.add_argument("--status", choices=("delivered", "dead"), help="only these (default: both)")

    p = sub.add_parser("recipients", help="the record of recipients that corroborates bounces")
    rsub = p.add_subparsers(dest="recipients_command", metavar="ACTION", required=True)
    text = (
        "print the tenants that sent to ADDRESS within recipients.retention, as the ingester sees them "
        "(exit 0 when any did, 1 when none did; a Bloom filter: 'yes' is probable, 'no' is certain)"
    )
    q = rsub.add_parser("check", help="which tenants sent to ADDRESS", description=text)
    common(q)
    q.add_argument("address", metavar="ADDRESS")
    q.add_argument("--json", action="store_true")
    q.set_defaults(handler=recipients.cmd_check)

    dom.add_parser(sub)
    rep.register(sub, _add)
    return ap
