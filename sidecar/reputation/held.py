"""Held mail: release (``postsuper -H``) or delete (``postsuper -d``) a tenant's held messages.

Only this relay's queue ids are acted on (each relay's Postfix holds its own), and only those
still in Postfix's hold queue (``postqueue -j``): ids that left the queue meanwhile are skipped.
A release is followed by ``postqueue -f`` so the messages leave at once.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Any

from sqlalchemy import Engine

from sidecar import metrics
from sidecar.recipients import node_name
from sidecar.reputation import store
from sidecar.reputation.evaluate import ReputationError

TIMEOUT = 120.0


def command(cfg: Any, name: str) -> list[str]:
    rc = cfg.reputation
    exe = os.path.join(rc.postfix_bin_dir, name) if rc.postfix_bin_dir else (shutil.which(name) or name)
    return [exe, "-c", rc.postfix_config_dir] if rc.postfix_config_dir else [exe]


def _run(cfg: Any, name: str, args: list[str], stdin: str = "") -> str:
    argv = command(cfg, name) + args
    try:
        done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ReputationError(f"{name}: {e}") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise ReputationError(f"{name} {' '.join(args)}: {last}")
    return done.stdout


def in_hold_queue(cfg: Any) -> set[str]:
    """The queue ids in Postfix's hold queue now."""
    ids = set()
    for line in _run(cfg, "postqueue", ["-j"]).splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if isinstance(msg, dict) and msg.get("queue_name") == "hold":
            ids.add(str(msg.get("queue_id", "")))
    return ids


def act_on_held(cfg: Any, engine: Engine, tenant: str, delete: bool = False) -> dict[str, int]:
    """Release (or delete) the tenant's held messages on this relay: {"released"|"deleted": n, "skipped": m}."""
    node = node_name(cfg)
    with engine.connect() as conn:
        ids = store.held_ids(conn, tenant, node)
    present = [q for q in ids if q in in_hold_queue(cfg)] if ids else []
    if present:
        _run(cfg, "postsuper", ["-d" if delete else "-H", "-"], "\n".join(present) + "\n")
        if not delete:
            _run(cfg, "postqueue", ["-f"])
    with engine.begin() as conn:
        store.clear_held(conn, tenant, node)
    what = "deleted" if delete else "released"
    metrics.REPUTATION_HELD_DONE.labels(what).inc(len(present))
    return {what: len(present), "skipped": len(ids) - len(present)}
