"""``sidecar recipients check ADDRESS``: ask the record of recipients what the ingester would."""

from __future__ import annotations

import argparse
import json
import time

from sidecar.config import Config


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
