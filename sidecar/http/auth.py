"""Bearer tokens from ``[[api.tokens]]``: compared in constant time, by their SHA-256."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from typing import Any

SCOPES = {"read": 1, "write": 2}


class TokenAuth:
    def __init__(self, tokens: Iterable[Any]) -> None:
        self.entries: list[tuple[bytes, str, str]] = []
        for i, t in enumerate(tokens):
            digest = bytes.fromhex(t.token_sha256) if t.token_sha256 else hashlib.sha256(t.token.encode()).digest()
            self.entries.append((digest, t.scope, t.name or f"token[{i}]"))

    def __bool__(self) -> bool:
        return bool(self.entries)

    def identify(self, authorization: bytes | None) -> tuple[str, str] | None:
        """(scope, name) for an ``Authorization: Bearer ...`` header value, or None.

        Every configured token is compared (no early exit), each in constant time.
        """
        if not authorization:
            return None
        kind, _, token = authorization.strip().partition(b" ")
        if kind.lower() != b"bearer" or not token.strip():
            return None
        digest = hashlib.sha256(token.strip()).digest()
        found = None
        for want, scope, name in self.entries:
            if hmac.compare_digest(digest, want) and found is None:
                found = (scope, name)
        return found

    @staticmethod
    def allows(scope: str, needed: str) -> bool:
        return SCOPES.get(scope, 0) >= SCOPES[needed]
