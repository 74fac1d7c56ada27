"""``sidecar reputation list|show|release|set-level|exempt``: through the API (``--api``) or on the database.

Every change names who made it (``--by``, default the login name) and why (``--reason``); both
go into the audit event. Held mail is released with ``postsuper -H`` on the relay the command
runs on (or, with ``--api``, on the relay that serves the API).
"""

from __future__ import annotations

import argparse
import getpass
import json
import time
import urllib.parse
from typing import Any

from sidecar.cli.admin import open_client, open_engine, option
from sidecar.cli.output import emit, handled
from sidecar.config import Config

LIST_COLS = ["tenant", "level", "name", "since", "exempt", "held", "reason"]


def _path(tenant: str, *more: str) -> str:
    return "/reputation/" + "/".join([urllib.parse.quote(tenant, safe="")] + list(more))


def _who(args: argparse.Namespace) -> str:
    if args.by:
        return option("by", args.by, 255) or ""
    try:
        return getpass.getuser() + " (cli)"
    except (KeyError, OSError):
        return "cli"


def _tenant(args: argparse.Namespace) -> str:
    tenant = option("tenant", args.tenant, 255) or ""
    if not tenant:
        raise ValueError("TENANT: expected a tenant name")
    return tenant


def _machine(cfg: Config) -> Any:
    from sidecar.reputation.levels import LevelMachine

    return LevelMachine(cfg.reputation)


@handled
def cmd_list(args: argparse.Namespace, cfg: Config) -> int:
    from sidecar.reputation.evaluate import list_tenants

    rows = open_client(args).request("GET", "/reputation")["items"] if args.api else list_tenants(open_engine(cfg))
    emit(args, rows, LIST_COLS)
    return 0


@handled
def cmd_show(args: argparse.Namespace, cfg: Config) -> int:
    from sidecar.reputation.evaluate import show

    tenant = _tenant(args)
    if args.api:
        data = open_client(args).request("GET", _path(tenant))
    else:
        data = show(open_engine(cfg), _machine(cfg), tenant, time.time())
    if args.json:
        print(json.dumps(data))
    else:
        for k, v in data.items():
            print(f"{k}: {'-' if v is None else v}")
    return 0


def _change(args: argparse.Namespace, cfg: Config, action: str, to: int | None, **kw: Any) -> dict[str, Any]:
    from sidecar.reputation.evaluate import change

    tenant = _tenant(args)
    why = option("reason", args.reason, 1000) or ""
    if args.api:
        body = {
            "reason": why,
            **({"by": args.by} if args.by else {}),
            **({"level": to} if to is not None else {}),
            **kw,
        }
        path = {"release": "release", "set-level": "level", "exempt": "exempt"}[action]
        return open_client(args).request("POST", _path(tenant, path), body=body)  # type: ignore[no-any-return]
    engine = open_engine(cfg)
    held = kw.pop("held", None)
    c = change(engine, tenant, action, _who(args), why, time.time(), to=to, held=held is not None, **kw)
    out: dict[str, Any] = {"tenant": tenant, "from": c.before, "to": c.after, "reason": c.reason}
    if held is not None:
        from sidecar.reputation.held import act_on_held

        out.update(act_on_held(cfg, engine, tenant, delete=held == "delete"))
    return out


def _print(args: argparse.Namespace, out: dict[str, Any]) -> None:
    if args.json:
        print(json.dumps(out))
        return
    line = f"{out['tenant']}: level {out['from']} -> {out['to']}"
    for k in ("released", "deleted", "skipped"):
        if k in out:
            line += f"; {out[k]} held message(s) {k}"
    print(line)


@handled
def cmd_release(args: argparse.Namespace, cfg: Config) -> int:
    held = "release" if args.release_held else "delete" if args.delete_held else None
    to = cfg.reputation.release_to if args.to is None else args.to
    _print(args, _change(args, cfg, "release", to, **({"held": held} if held else {})))
    return 0


@handled
def cmd_set_level(args: argparse.Namespace, cfg: Config) -> int:
    _print(args, _change(args, cfg, "set-level", args.level))
    return 0


@handled
def cmd_exempt(args: argparse.Namespace, cfg: Config) -> int:
    _print(args, _change(args, cfg, "exempt", None, exempt=not args.remove))
    return 0


def level(value: str) -> int:
    if value not in ("1", "2", "3", "4", "5"):
        raise argparse.ArgumentTypeError("expected a level from 1 to 5")
    return int(value)


def register(sub: Any, add: Any) -> None:
    """The ``reputation`` subcommands (``add`` is the parser's database-or-API helper)."""
    p = sub.add_parser("reputation", help="reputation levels per tenant: list, show, release, set, exempt")
    rsub = p.add_subparsers(dest="reputation_command", metavar="ACTION", required=True)
    add(rsub, "list", cmd_list, "tenants with a level (above normal, exempt, or once changed)")
    q = add(rsub, "show", cmd_show, "one tenant: level, counts and rates over the window, held messages")
    q.add_argument("tenant", metavar="TENANT")

    def change_opts(q: argparse.ArgumentParser) -> None:
        q.add_argument("tenant", metavar="TENANT")
        q.add_argument("--reason", required=True, help="why (kept in the audit event)")
        q.add_argument("--by", help="who makes the change (default: the login name)")

    q = add(rsub, "release", cmd_release, "release a tenant from its level (the window restarts now)")
    change_opts(q)
    q.add_argument("--to", type=level, help="level to go to, 1-3 (default: reputation.release_to)")
    g = q.add_mutually_exclusive_group()
    g.add_argument("--release-held", action="store_true", help="release its held messages (postsuper -H)")
    g.add_argument("--delete-held", action="store_true", help="delete its held messages (postsuper -d)")
    q = add(rsub, "set-level", cmd_set_level, "set a tenant's level (4 and 5 stay until released)")
    change_opts(q)
    q.add_argument("level", type=level, metavar="LEVEL")
    q = add(rsub, "exempt", cmd_exempt, "never move a tenant automatically (it goes to level 1)")
    change_opts(q)
    q.add_argument("--remove", action="store_true", help="lift the exemption")
