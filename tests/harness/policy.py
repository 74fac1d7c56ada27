"""Shared helpers for policy unit tests: real Postfix requests from tests/data/policy."""

import json
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "data" / "policy"


def fixtures() -> list[dict]:
    with open(DATA / "policy-requests-postfix-3.7.11.jsonl") as fh:
        return [json.loads(line) for line in fh]


def encode(attrs) -> bytes:
    items = attrs.items() if isinstance(attrs, dict) else attrs
    return "".join(f"{k}={v}\n" for k, v in items).encode() + b"\n"


def rcpt(**over) -> dict[str, str]:
    base = dict(next(r for r in fixtures() if dict(r["attrs"])["protocol_state"] == "RCPT")["attrs"])
    base.update(over)
    return base
