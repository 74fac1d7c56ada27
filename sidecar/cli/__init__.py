"""The ``sidecar`` command: ``main()`` and the ``sidecar ingest`` fast path.

The parser is :mod:`sidecar.cli.parser`; the handlers are in the modules beside it. Imports are
lazy: ``sidecar ingest`` runs once per bounce, so start-up must stay cheap.
"""

from __future__ import annotations

import sys

from sidecar.cli.output import EX_CONFIG, EX_SIGPIPE, EX_UNAVAILABLE, EX_USAGE

TYPE_CHECKING = False  # typing costs ~10 ms at start-up, paid once per bounce
if TYPE_CHECKING:
    import argparse
    from typing import Any

BOUNCE_COMMANDS = ("ingest", "parse", "import", "replay")  # sidecar.cli.bounces: cmd_<name>(args)
CONFIG_OPTIONAL = ("check-domain",)  # a configuration only gives defaults: the built-in ones will do


def config_path(args: argparse.Namespace) -> str | None:
    """--config, $SIDECAR_CONFIG or /etc/postfix-sidecar/sidecar.toml; the built-in defaults
    only for a command given its database (--db) or API (--api). Sets ``args.config``."""
    from sidecar.config import find_config

    explicit = bool(getattr(args, "db", None) or getattr(args, "api", None))
    explicit = explicit or getattr(args, "command", None) in CONFIG_OPTIONAL
    args.config = find_config(getattr(args, "config", None), defaults_ok=explicit)
    return str(args.config) if args.config else None


def load_for_args(args: argparse.Namespace) -> Any:
    """The configuration a command runs on: its file (:func:`config_path`) and option overrides."""
    from sidecar.config import load_config

    config_path(args)
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
        from sidecar.cli.bounces import ingest_main

        return ingest_main(argv[1:])
    from sidecar.cli.parser import build_parser

    ap = build_parser()
    args = ap.parse_args(argv)
    if getattr(args, "print_file", None):
        from sidecar.cli.files import print_file

        return print_file(args.print_file)
    if not args.command:
        ap.print_help()
        return EX_USAGE
    return _guarded(lambda: _run(args), args)


def _run(args: argparse.Namespace) -> int:
    if args.command in BOUNCE_COMMANDS:
        from sidecar.cli import bounces

        return int(getattr(bounces, f"cmd_{args.command}")(args))
    from sidecar.config import ConfigError

    try:
        cfg = load_for_args(args)
    except ConfigError as e:
        print(f"sidecar: configuration error: {e}", file=sys.stderr)
        return EX_CONFIG
    require_database(args, cfg)
    fmt = getattr(args, "log_format", None) or cfg.logging.format
    if args.command == "serve" or fmt == "json" or args.log_level != "INFO":
        from sidecar.logs import setup_logging

        # other commands print their results; their log carries warnings and errors only,
        # unless --log-level asks for more (or less)
        level = args.log_level if args.command == "serve" or args.log_level != "INFO" else "WARNING"
        setup_logging(level, fmt)
    return int(args.handler(args, cfg))


CREATES_DATABASE = ("serve", "db upgrade")
NO_DATABASE = ("check-config", "postfix-config", "check-domain")


def require_database(args: argparse.Namespace, cfg: Any) -> None:
    """A SQLite database named by the configuration must exist: only serve and db upgrade
    create it (a command given ``--db URL`` works on the file it was told, new or not)."""
    command = " ".join(filter(None, (args.command, getattr(args, "db_command", None))))
    if command in CREATES_DATABASE + NO_DATABASE or getattr(args, "db", None) or getattr(args, "api", None):
        return
    from sidecar.store.db import DatabaseUnavailable, sqlite_path

    path = sqlite_path(cfg.database.url)
    if path is not None and not path.exists():
        where = args.config or "the built-in defaults"
        raise DatabaseUnavailable(
            f"no database at {path} (database.url of {where}); `sidecar serve` or `sidecar db upgrade` creates it"
        )


def _guarded(run: Any, args: argparse.Namespace) -> int:
    """Expected failures as one line on stderr, never a traceback."""
    try:
        code = int(run())
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return code
    except BrokenPipeError:
        # `sidecar ... --json | head`: stop quietly, as other Unix tools do (they die of SIGPIPE)
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's last flush must not fail again
        return EX_SIGPIPE
    except Exception as e:
        from sidecar.errors import is_database_error, one_line

        if not is_database_error(e):
            raise
        print(f"sidecar {args.command}: database unavailable: {one_line(e)}", file=sys.stderr)
        return EX_UNAVAILABLE
