"""The policy delegation protocol for tests and benches: a client, and real Postfix requests
(tests/data/policy) to send with it."""

from __future__ import annotations

import json
import socket
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


class PolicyClient:
    """One connection to a policy server; ``ask`` sends a request and returns its action."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection((host, port), timeout=10)
        self.buf = b""

    def ask(self, attrs: dict[str, str]) -> str:
        self.sock.sendall(encode(attrs))
        while b"\n\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("policy server closed the connection")
            self.buf += data
        reply, _, self.buf = self.buf.partition(b"\n\n")
        assert reply.startswith(b"action=") and b"\n" not in reply, reply
        return reply[len(b"action=") :].decode()

    def close(self) -> None:
        self.sock.close()
