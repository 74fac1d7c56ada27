"""DKIM key checks (RFC 6376 3.6.1, RFC 8301, RFC 8463): present, key type and size, revoked, testing."""

from __future__ import annotations

import base64
import binascii

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key

from sidecar.domains.lookup import Dns, DnsTempError
from sidecar.domains.results import Result, State

MIN_BITS, GOOD_BITS = 1024, 2048


def tags(text: str) -> dict[str, str]:
    """A tag list (``k=v; k=v``): names lower-cased; whitespace removed inside values."""
    out: dict[str, str] = {}
    for part in text.split(";"):
        name, eq, value = part.partition("=")
        if eq:
            out.setdefault(name.strip().lower(), "".join(value.split()))
    return out


def check_dkim(dns: Dns, domain: str, selectors: list[str]) -> list[Result]:
    if not selectors:
        return [
            Result(
                "dkim",
                State.WARN,
                "no DKIM selector given, so no key was checked",
                "name the selector your signer uses (--dkim-selector, or dkim_selectors in [[domains]])",
            )
        ]
    return [_selector(dns, domain, s) for s in selectors]


def _selector(dns: Dns, domain: str, selector: str) -> Result:
    check, name = f"dkim:{selector}", f"{selector}._domainkey.{domain}"
    try:
        texts = dns.txt(name)
    except DnsTempError as e:
        return Result(check, State.TEMPERROR, f"DKIM key {name} not checked: {e}")
    keys = [t for t in texts if "p=" in t]
    if not keys:
        return Result(
            check,
            State.FAIL,
            f"no DKIM key at {name}: mail signed with selector {selector} fails DKIM",
            f'publish the selector\'s public key: {name}. TXT "v=DKIM1; k=rsa; p=..." (opendkim-genkey prints it)',
        )
    if len(keys) > 1:
        return Result(check, State.FAIL, f"{len(keys)} DKIM keys at {name}", "publish exactly one key per selector")
    t = tags(keys[0])
    if t.get("v", "DKIM1") != "DKIM1":
        return Result(check, State.FAIL, f"{name}: v={t['v']} is not DKIM1", "start the record with v=DKIM1")
    if not t.get("p"):
        return Result(
            check,
            State.FAIL,
            f"the key at {name} is revoked (empty p=)",
            "sign with a selector that has a key, or publish this selector's public key again",
        )
    ktype = t.get("k", "rsa").lower()
    state, detail, fix = _key(ktype, t["p"])
    flags = t.get("t", "").lower().split(":")
    if "y" in flags and state is State.PASS:
        return Result(
            check,
            State.WARN,
            f"{name}: {detail}; in testing mode (t=y): receivers may treat signed mail as unsigned",
            f"remove t=y from {name} once signing works",
        )
    return Result(check, state, f"{name}: {detail}", fix)


def _key(ktype: str, p: str) -> tuple[State, str, str]:
    try:
        raw = base64.b64decode(p, validate=True)
    except (binascii.Error, ValueError):
        return State.FAIL, "p= is not base64", "publish the public key again, exactly as your signer printed it"
    if ktype == "ed25519":
        if len(raw) != 32:
            return State.FAIL, "p= is not a 32-byte Ed25519 key", "publish the Ed25519 public key again"
        return State.PASS, "Ed25519 key (sign with an RSA key as well: not every receiver verifies Ed25519)", ""
    if ktype != "rsa":
        return State.FAIL, f"unknown key type k={ktype}", "use k=rsa (or k=ed25519 beside an RSA key)"
    try:
        key = load_der_public_key(raw)
    except ValueError:
        return (
            State.FAIL,
            "p= is not an RSA public key",
            "publish the public key again, exactly as your signer printed it",
        )
    if not isinstance(key, rsa.RSAPublicKey):
        return State.FAIL, "p= is not an RSA public key", "publish an RSA public key with k=rsa"
    bits = key.key_size
    regen = "generate a 2048-bit key under a new selector, publish it, then switch the signer to it"
    if bits < MIN_BITS:
        return State.FAIL, f"RSA key of {bits} bits: too weak, receivers ignore the signature", regen
    if bits < GOOD_BITS:
        return State.WARN, f"RSA key of {bits} bits (2048 is recommended)", regen
    return State.PASS, f"RSA key of {bits} bits", ""
