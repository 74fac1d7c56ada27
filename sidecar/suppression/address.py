"""Address syntax and the comparison key used everywhere suppressions are matched."""

from __future__ import annotations

import re

from sidecar.suppression.fields import control_problem


class AddressError(ValueError):
    """An address that cannot be a mailbox: the message names the problem."""


# Deliberately permissive on the local part (quoted forms, UTF-8 per RFC 6531), strict on shape.
_DOMAIN = re.compile(
    r"^(?:[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.)*"
    r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.?$|^\[[0-9A-Fa-f:.IPv]+\]$"
)


def split(address: str) -> tuple[str, str]:
    """Return (local part, domain) or raise AddressError naming what is wrong."""
    problem = control_problem(address)
    if problem:  # even at the ends (strip() would hide CR, LF ...), even quoted: never stored, never logged raw
        raise AddressError(f"{address!r}: {problem}")
    a = address.strip()
    if a.startswith("<") and a.endswith(">"):
        a = a[1:-1].strip()
    if not a:
        raise AddressError("empty address")
    if " " in a and not a.startswith('"'):
        raise AddressError(f"{address!r}: whitespace in address")
    local, sep, domain = a.rpartition("@")
    if not sep:
        raise AddressError(f"{address!r}: no '@' in address")
    if not local:
        raise AddressError(f"{address!r}: empty local part")
    if len(local) > 64 * 4 or len(a) > 320:
        raise AddressError(f"{address!r}: address too long")
    try:
        ascii_domain = domain.encode("idna").decode("ascii") if not domain.isascii() else domain
    except UnicodeError:
        raise AddressError(f"{address!r}: domain {domain!r} is not a valid IDN") from None
    if not domain or not _DOMAIN.match(ascii_domain):
        raise AddressError(f"{address!r}: domain {domain!r} is not a valid domain")
    return local, domain.rstrip(".").lower()


def canonical(address: str) -> str:
    """The stored form: domain lower-cased, local part as given."""
    local, domain = split(address)
    return f"{local}@{domain}"


def match_key(address: str, case_sensitive_local: bool = False) -> str:
    """The comparison key for an already canonical (or Postfix-supplied) address.

    Cheap: used on the policy hot path. Domains compare case-insensitively; the local
    part too unless configured otherwise.
    """
    if not case_sensitive_local:
        return address.lower()
    local, _, domain = address.rpartition("@")
    return f"{local}@{domain.lower()}"


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower()
