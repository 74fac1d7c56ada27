"""VERP sender round trip and signature checks."""

from __future__ import annotations

import pytest

from sidecar.bounce.verp import BadVerpToken, VerpData, make_verp_sender, make_verp_token, parse_verp_token

KEY = b"0123456789abcdef0123456789abcdef"


def _token(sender: str) -> str:
    local = sender.rpartition("@")[0]
    return local.split("+", 1)[1]


def test_round_trip_with_tenant() -> None:
    sender = make_verp_sender(KEY, "Alice@Example.COM", "bounces@bounce.example.com", tenant="acme")
    assert sender.startswith("bounces+") and sender.endswith("@bounce.example.com")
    assert parse_verp_token(KEY, _token(sender)) == VerpData("alice@example.com", "acme")


def test_round_trip_without_tenant_and_case_folding() -> None:
    token = make_verp_token(KEY, "bob@example.net")
    assert token == token.lower() and token.isalnum()
    assert parse_verp_token(KEY, token.upper()) == VerpData("bob@example.net", None)


def test_bad_signature_raises() -> None:
    token = make_verp_token(KEY, "bob@example.net")
    with pytest.raises(BadVerpToken):
        parse_verp_token(b"another key", token)
    flipped = token[:-3] + ("a" if token[-3] != "a" else "b") + token[-2:]
    with pytest.raises(BadVerpToken):
        parse_verp_token(KEY, flipped)


@pytest.mark.parametrize("token", ["", "!!!", "a", "abc", "x" * 2000, "0189"])
def test_malformed_tokens_raise(token: str) -> None:
    with pytest.raises(BadVerpToken):
        parse_verp_token(KEY, token)


def test_bad_bounce_address_is_rejected() -> None:
    with pytest.raises(ValueError, match="local@domain"):
        make_verp_sender(KEY, "a@b.example", "no-at-sign")
