"""The ``sidecar`` command: argument handling only; the work happens in the modules named.

Imports are lazy: ``sidecar ingest`` runs once per bounce, so start-up must stay cheap.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

EX_OK, EX_USAGE, EX_CONFIG, EX_TEMPFAIL, EX_UNAVAILABLE = 0, 2, 78, 75, 69
EX_SIGPIPE = 128 + 13   # what a shell reports for a tool killed by SIGPIPE

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

With no --config the defaults serve: policy on tcp:10031 and HTTP on tcp:9731, both on
127.0.0.1, and a SQLite database in ./var/. Every command that touches the database takes
--db URL (SQLAlchemy URL, e.g. sqlite:///var/sidecar.db or postgresql://user@host/db).
"""


def _common(p: argparse.ArgumentParser, db: bool = True) -> None:
    p.add_argument("--config", "-c", metavar="FILE", help="TOML configuration file (default: built-in defaults)")
    if db:
        p.add_argument("--db", metavar="URL", help="database URL; overrides database.url from the config")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="sidecar", description=DESCRIPTION,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("serve", help="run the policy server and the HTTP listener",
                       description="Run the policy server (Postfix check_policy_service), the HTTP listener "
                                   "(/metrics, /healthz) and the ingest hand-off socket. Upgrades the schema first.")
    _common(p)
    p.add_argument("--policy", action="append", metavar="ENDPOINT",
                   help="policy listener, a Twisted endpoint (repeatable), e.g. tcp:10031:interface=127.0.0.1")
    p.add_argument("--http", metavar="ENDPOINT", help="HTTP listener endpoint, e.g. tcp:9731:interface=127.0.0.1")

    p = sub.add_parser("check-config", help="validate a configuration file and exit",
                       description="Load and validate the configuration; exit 0 if good, 78 with the key path "
                                   "of the problem if not.")
    _common(p, db=False)

    p = sub.add_parser("postfix-config", help="print the Postfix main.cf and master.cf lines for this config")
    _common(p, db=False)
    p.add_argument("--format", choices=("text", "json"), default="text",
                   help='text (default): the lines to paste; json: {"main.cf": TEXT, "main.cf parameters": '
                        '{NAME: VALUE}, "master.cf": TEXT} for deployment tools')

    p = sub.add_parser("db", help="database schema")
    dsub = p.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    q = dsub.add_parser("upgrade", help="create or upgrade the schema to the current version")
    _common(q)

    p = sub.add_parser("suppressions", help="manage the suppression list")
    ssub = p.add_subparsers(dest="sup_command", metavar="ACTION", required=True)
    q = ssub.add_parser("add", help="suppress addresses")
    _common(q)
    q.add_argument("addresses", nargs="+", metavar="ADDRESS")
    q.add_argument("--reason", default="manual", help="reason shown in the reject reply (default: manual)")
    q.add_argument("--tenant", default="", help="scope to this tenant (SASL user or sender domain); default global")
    q.add_argument("--expires", metavar="WHEN", help='expiry: a duration ("30d") or ISO 8601 time; default never')
    q.add_argument("--note", help="free text kept with the suppression")
    q = ssub.add_parser("remove", help="reactivate addresses (history is kept)")
    _common(q)
    q.add_argument("addresses", nargs="+", metavar="ADDRESS")
    q.add_argument("--tenant", default="", help="the tenant scope to remove from (default global)")
    q = ssub.add_parser("list", help="list active suppressions")
    _common(q)
    q.add_argument("--tenant", help="only this tenant ('' = global only)")
    q.add_argument("--reason", help="only this reason")
    q.add_argument("--prefix", help="only addresses starting with this")
    q.add_argument("--limit", type=int, default=None, help="at most this many rows")
    q.add_argument("--json", action="store_true", help="one JSON object per line")
    q = ssub.add_parser("import", help="import suppressions from CSV",
                        description="CSV with a header line; columns: address (required), tenant, reason, category, "
                                    "created_at, expires_at, source, note. '-' reads stdin.")
    _common(q)
    q.add_argument("file", metavar="FILE.csv")
    q.add_argument("--reason", default="imported", help="reason for rows without one")
    q.add_argument("--tenant", default="", help="tenant for rows without one")
    q.add_argument("--expires", metavar="WHEN", help="expiry for rows without one")
    q = ssub.add_parser("export", help="export active suppressions as CSV ('-' = stdout)")
    _common(q)
    q.add_argument("file", metavar="FILE.csv", nargs="?", default="-")
    q.add_argument("--tenant", help="only this tenant")
    q.add_argument("--reason", help="only this reason")

    p = sub.add_parser("limits", help="inspect or reset rate-limit keys")
    lsub = p.add_subparsers(dest="limits_command", metavar="ACTION", required=True)
    for name, text in (("show", "print use and remaining quota for KEY"), ("reset", "clear the counters of KEY")):
        q = lsub.add_parser(name, help=text, description=text + ". KEY is RULE:VALUE, e.g. per-user:alice "
                                                               "(several key parts joined with '|').")
        _common(q)
        q.add_argument("key", metavar="KEY")
        if name == "show":
            q.add_argument("--json", action="store_true")

    # Bounce handling: implemented in sidecar.bounce.commands.
    p = sub.add_parser("ingest", help="read one bounce on stdin (the pipe(8) command)",
                       description="Read one message on stdin, as Postfix's pipe(8) delivers it, parse it and "
                                   "record events and suppressions. Exit 0 once stored (or deliberately set aside); "
                                   "75 on any transient or internal failure so Postfix keeps the message and retries.")
    _common(p)
    p.add_argument("--sender", default="", help="envelope sender (${sender})")
    p.add_argument("--recipient", default="", help="envelope recipient (${recipient})")
    p.add_argument("--queue-id", default="", help="Postfix queue id (${queue_id})")
    p.add_argument("--extension", default="", help="address extension, the VERP token (${extension})")
    p.add_argument("--socket", metavar="PATH",
                   help="the running service's hand-off socket (default: ingest.socket from the config)")
    p.add_argument("--no-handoff", action="store_true", help="do not hand the message to the running service")

    p = sub.add_parser("parse", help="parse bounces and print the failed recipients (no database)")
    p.add_argument("files", nargs="*", metavar="FILE", help="messages to parse; stdin when none")
    p.add_argument("--json", action="store_true", help="JSON output")
    p.add_argument("--paths-from-stdin", action="store_true", help="read file paths from stdin, one per line")

    p = sub.add_parser("import", help="import historical bounces from an mbox or Maildir")
    _common(p)
    p.add_argument("path", metavar="PATH")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--require-record", action="store_true",
                   help="suppress only addresses a VERP token or the record of recipients confirms (as the pipe)")

    p = sub.add_parser("replay", help="re-run parsing and the suppression policy over stored messages")
    _common(p)
    p.add_argument("--apply", action="store_true", help="apply the changes (default: only show them)")
    p.add_argument("--state", choices=("all", "unparsed", "parsed"), default="all")
    p.add_argument("--json", action="store_true")
    from sidecar import opscli, recipient_cli
    opscli.register(sub)
    recipient_cli.register(sub)
    return ap


def _load(args: argparse.Namespace) -> Any:
    from sidecar.config import load_config

    overrides: dict[str, Any] = {"database.url": getattr(args, "db", None)}
    if getattr(args, "policy", None):
        overrides["server.policy"] = args.policy
    if getattr(args, "http", None):
        overrides["server.http"] = args.http
    return load_config(args.config, overrides)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["ingest"] and not {"-h", "--help"} & set(argv):
        # the pipe(8) command, once per bounce: skip building the whole CLI
        from sidecar.bounce.commands import ingest_main

        return ingest_main(argv[1:])
    ap = build_parser()
    args = ap.parse_args(argv)
    if not args.command:
        ap.print_help()
        return EX_USAGE
    return _guarded(lambda: _run(ap, args), args)


def _run(ap: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.command in ("ingest", "parse", "import", "replay"):
        from sidecar.bounce import commands

        return int(getattr(commands, f"cmd_{args.command}")(args))
    from sidecar.config import ConfigError

    try:
        cfg = _load(args)
    except ConfigError as e:
        print(f"sidecar: configuration error: {e}", file=sys.stderr)
        return EX_CONFIG
    from sidecar import commands as admin

    handler = getattr(args, "ops_handler", None) or admin.dispatch(args, ap)
    return int(handler(args, cfg))


def _guarded(run: Any, args: argparse.Namespace) -> int:
    """Expected failures as one line on stderr, never a traceback."""
    try:
        code = int(run())
        sys.stdout.flush()   # a closed pipe shows here, not in the interpreter's exit
        return code
    except BrokenPipeError:
        # `sidecar ... --json | head`: stop quietly, as other Unix tools do (they die of SIGPIPE)
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())   # the interpreter's last flush must not fail again
        return EX_SIGPIPE
    except Exception as e:
        from sidecar.errors import is_database_error, one_line

        if not is_database_error(e):
            raise
        print(f"sidecar {args.command}: database unavailable: {one_line(e)}", file=sys.stderr)
        return EX_UNAVAILABLE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
