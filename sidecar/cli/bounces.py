"""``sidecar ingest | parse | import | replay``: each ``cmd_<name>(args) -> exit code``.

Imports stay inside the functions: ``cmd_ingest`` runs once per bounce and must start fast.
"""

from __future__ import annotations

import sys

from sidecar.cli.output import EX_CONFIG, EX_OK, EX_TEMPFAIL, EX_USAGE
from sidecar.errors import one_line

TYPE_CHECKING = False  # typing costs ~10 ms at start-up, paid once per bounce
if TYPE_CHECKING:
    from typing import Any


def _one_line(e: BaseException) -> str:
    return one_line(e, with_type=True)


def cmd_ingest(args: Any) -> int:
    """The pipe(8) command. Returns 0 once recorded, 75 on ANY failure: never 1."""
    try:
        from sidecar.bounce.pipe import guarded
    except BaseException as e:  # guarded() itself maps every other failure to 75
        sys.stderr.write(f"sidecar ingest: temporary failure, message kept for retry: {_one_line(e)}\n")
        return EX_TEMPFAIL
    return guarded(args)


class _IngestArgs(Exception):
    """An argument error in the pipe command: exit 75 (argparse's exit 2 would lose the DSN)."""


def ingest_parser() -> Any:
    """Only the ``ingest`` options (same as the full parser's; a test keeps them equal).

    Building the full ``sidecar`` parser costs ~35 ms, more than the rest of the hand-off.
    """
    import argparse

    class Parser(argparse.ArgumentParser):
        def error(self, message: str) -> Any:  # type: ignore[override]
            raise _IngestArgs(message)

    p = Parser(prog="sidecar ingest", add_help=False)
    p.add_argument("--config", "-c")
    p.add_argument("--db")
    p.add_argument("--sender", default="")
    p.add_argument("--recipient", default="")
    p.add_argument("--queue-id", default="")
    p.add_argument("--extension", default="")
    p.add_argument("--socket")
    p.add_argument("--no-handoff", action="store_true")
    return p


def ingest_main(argv: list[str]) -> int:
    """``sidecar ingest ARGS`` without building the whole CLI: for sidecar.cli.main's fast path."""
    try:
        args = ingest_parser().parse_args(argv)
    except BaseException as e:
        sys.stderr.write(f"sidecar ingest: temporary failure, bad arguments: {_one_line(e)}\n")
        return EX_TEMPFAIL
    return cmd_ingest(args)


def _load_config(args: Any) -> Any:
    from sidecar.cli import config_path
    from sidecar.config import load_config

    return load_config(config_path(args), {"database.url": getattr(args, "db", None)})


# -- parse ------------------------------------------------------------------------------------
def _parse_file(path: str) -> dict[str, Any]:
    from sidecar.bounce.parse import parse_message

    try:
        with open(path, "rb") as fh:
            raw = fh.read()
        return {"file": path, "results": [r.to_json() for r in parse_message(raw).recipients]}
    except Exception as e:
        return {"file": path, "results": [], "error": _one_line(e)}


def _table(name: str | None, parsed: Any) -> str:
    head = f"{name}: " if name else ""
    lines = [
        f"{head}{parsed.kind.value}, {len(parsed.recipients)} recipient(s)"
        + (f", reporting MTA {parsed.reporting_mta}" if parsed.reporting_mta else "")
    ]
    for r in parsed.recipients:
        hard = {True: "hard", False: "soft", None: "-"}[r.hard]
        diag = (r.diagnostic or "")[:70]
        lines.append(
            f"  {r.address:<36} {r.category.value:<17} {r.reason or '-':<15} {hard:<4} {r.status or '-':<7} {diag}"
        )
    return "\n".join(lines)


def _explained(name: str | None, raw: bytes, as_json: bool) -> str:
    """``parse --explain``: per recipient, which signal decided the address, category and hard/soft."""
    import json

    from sidecar.bounce.parse import parse_message
    from sidecar.bounce.parse.classify import evidence_of, recording

    with recording() as seen:
        parsed = parse_message(raw)
    rows = []
    for r in parsed.recipients:
        found = evidence_of(r, seen)
        rows.append(
            {
                **r.to_json(),
                "address_source": getattr(r, "address_source", None),
                "evidence": found.to_json() if found is not None else None,
            }
        )
    if as_json:
        return json.dumps({"file": name, "kind": parsed.kind.value, "results": rows} if name else rows)
    lines = [_table(name, parsed).splitlines()[0]]
    for row in rows:
        ev: dict[str, Any] = row["evidence"] or {}
        hard = {True: "hard", False: "soft", None: "-"}[row["hard"]]
        lines.append(f"  {row['address']}")
        lines.append(f"    address from:  {row['address_source'] or '-'}")
        status = f"{ev.get('status') or row['status'] or '-'} (from {ev.get('status_source', '-')})"
        lines.append(f"    status:        {status}; SMTP command: {ev.get('command') or '-'}")
        words = f' "{ev["words"]}"' if ev.get("words") else ""
        lines.append(f"    phrase class:  {ev.get('phrase_class') or '-'}{words}")
        decided = ev.get("decided_by") or "-"
        temporary = " (temporary: never hard)" if ev.get("temporary") else ""
        lines.append(f"    decided by:    {decided} -> {row['reason']}, {row['category']}, {hard}{temporary}")
    return "\n".join(lines)


def cmd_parse(args: Any) -> int:
    """Parse only, no database. ``--json``: stdin -> bare list; files -> one JSON line per file."""
    import json

    from sidecar.bounce.parse import parse_message

    explain = getattr(args, "explain", False)
    files = list(args.files or [])
    if getattr(args, "paths_from_stdin", False):
        files += [line.strip() for line in sys.stdin if line.strip()]
    elif not files:
        raw = sys.stdin.buffer.read()
        if explain:
            print(_explained(None, raw, args.json))
            return EX_OK
        parsed = parse_message(raw)
        if args.json:
            print(json.dumps([r.to_json() for r in parsed.recipients]))
        else:
            print(_table(None, parsed))
        return EX_OK
    code = EX_OK
    for path in files:
        if explain:
            try:
                with open(path, "rb") as fh:
                    print(_explained(path, fh.read(), args.json))
            except OSError as e:
                print(f"{path}: {_one_line(e)}", file=sys.stderr)
                code = 1
            continue
        if args.json:
            out = _parse_file(path)
            print(json.dumps(out), flush=False)
            code = code if "error" not in out else 1
            continue
        try:
            with open(path, "rb") as fh:
                print(_table(path, parse_message(fh.read())))
        except OSError as e:
            print(f"{path}: {_one_line(e)}", file=sys.stderr)
            code = 1
    sys.stdout.flush()
    return code


# -- import / replay ----------------------------------------------------------------------------
def _recorder(args: Any, corroborate: bool | None = None) -> Any:
    from sidecar.bounce.record import Recorder
    from sidecar.cli import require_database
    from sidecar.cli.serve import upgraded_engine

    cfg = _load_config(args)
    require_database(args, cfg)
    return Recorder(cfg, upgraded_engine(cfg), corroborate=corroborate)


def cmd_import(args: Any) -> int:
    from sidecar.bounce.mailbox import MailboxError, import_path
    from sidecar.config import ConfigError

    try:
        # The operator's own bounces: their structure is enough, unless --require-record asks for
        # the same corroboration as the pipe (VERP or the relay's record of recipients).
        recorder = _recorder(args, corroborate=bool(getattr(args, "require_record", False)))
    except ConfigError as e:
        print(f"sidecar: configuration error: {e}", file=sys.stderr)
        return EX_CONFIG
    try:
        stats = import_path(recorder, args.path, progress=not args.no_progress)
    except MailboxError as e:
        print(f"sidecar import: {e}", file=sys.stderr)
        return EX_USAGE
    finally:
        recorder.engine.dispose()
    print(stats.summary())
    return EX_OK


def cmd_replay(args: Any) -> int:
    from sidecar.bounce.replay import replay
    from sidecar.config import ConfigError

    try:
        recorder = _recorder(args)
    except ConfigError as e:
        print(f"sidecar: configuration error: {e}", file=sys.stderr)
        return EX_CONFIG
    try:
        replay(recorder, state=args.state, apply=args.apply, as_json=args.json, out=sys.stdout)
    finally:
        recorder.engine.dispose()
    return EX_OK


if __name__ == "__main__":  # python -m sidecar.cli.bounces ARGS: the pipe command without the parser
    sys.exit(ingest_main(sys.argv[1:]))
