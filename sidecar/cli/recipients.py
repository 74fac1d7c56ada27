"""``sidecar recipients check ADDRESS``: ask the record of recipients what the ingester would."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from sidecar.config import Config


def register(sub: Any) -> None:
    from sidecar.cli import _common

    p = sub.add_parser("recipients", help="the record of recipients that corroborates bounces")
    rsub = p.add_subparsers(dest="recipients_command", metavar="ACTION", required=True)
    text = ("print the tenants that sent to ADDRESS within recipients.retention, as the ingester sees them "
            "(exit 0 when any did, 1 when none did; a Bloom filter: 'yes' is probable, 'no' is certain)")
    q = rsub.add_parser("check", help="which tenants sent to ADDRESS", description=text)
    _common(q)
    q.add_argument("address", metavar="ADDRESS")
    q.add_argument("--json", action="store_true")
    q.set_defaults(ops_handler=cmd_check)


def cmd_check(args: argparse.Namespace, cfg: Config) -> int:
    from sidecar.recipients import open_lookup
    from sidecar.store.db import make_engine
    from sidecar.suppression.address import match_key

    engine = make_engine(cfg.database.url, create_dir=False)
    try:
        key = match_key(args.address.strip().strip("<>"), cfg.suppression.local_part_case_sensitive)
        tenants = sorted(open_lookup(cfg, engine).tenants_for(key, time.time()))
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps({"address": key, "tenants": tenants, "recorded": bool(tenants)}))
    elif tenants:
        print(f"{key}: recorded for tenant(s) {', '.join(repr(t) for t in tenants)}")
    else:
        print(f"{key}: not in the record")
    return 0 if tenants else 1
