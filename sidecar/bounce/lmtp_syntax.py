"""The arguments of LMTP commands (MAIL, RCPT, XFORWARD): checked, bounded, one clear reply each.

A problem with a MAIL or RCPT argument is answered with a 4xx, never a 5xx: a 5xx would make
Postfix bounce the message, and a bounced DSN (null sender) is lost; the pipe command never
refuses a message permanently either. Postfix itself never sends such a command, so only a
client that is not Postfix ever sees these replies."""

from __future__ import annotations

import re

MAX_ADDRESS = 2048  # bytes of a path between < and > (RFC 5321: 256; room for what Postfix may queue)
MAX_XFORWARD_VALUE = 255
_PATH = re.compile(r"^(FROM|TO):\s?<([^<>]*)>(.*)$", re.IGNORECASE | re.DOTALL)
_XTEXT = re.compile(r"\+([0-9A-Fa-f]{2})")
UNAVAILABLE = ("[UNAVAILABLE]", "[TEMPUNAVAIL]")
# the Received: line Postfix's cleanup puts first: "... by HOST (Postfix) [with PROTO] id QUEUEID[ for <..>];"
_OWN_RECEIVED = re.compile(
    rb"\AReceived:[^\n]*(?:\n[ \t][^\n]*)*?\(Postfix\)(?: with \S+)?\s+id ([0-9A-Za-z]{5,32})[;\s]"
)
HEAD = 2048  # bytes of the message searched for that line


class CommandError(Exception):
    """The reply line to send (``5xx``/``4xx`` with its enhanced status) for a refused command."""


def _path(arg: str, keyword: str) -> tuple[str, list[str]]:
    m = _PATH.match(arg)
    if m is None or m.group(1).upper() != keyword:
        raise CommandError(f"451 4.5.4 syntax: {'MAIL FROM' if keyword == 'FROM' else 'RCPT TO'}:<address>")
    address = m.group(2)
    if len(address.encode()) > MAX_ADDRESS:
        raise CommandError(f"451 4.1.3 address longer than {MAX_ADDRESS} bytes")
    if any(c.isspace() for c in address) and not address.startswith('"'):
        raise CommandError("451 4.1.3 white space in address")
    return address, m.group(3).split()


def parse_mail(arg: str) -> str:
    """``FROM:<address> [BODY=8BITMIME] [SIZE=n] [SMTPUTF8]`` -> the address ("" for <>)."""
    address, params = _path(arg, "FROM")
    for param in params:
        name, _, value = param.partition("=")
        name = name.upper()
        if name == "BODY" and value.upper() in ("7BIT", "8BITMIME"):
            continue
        if name == "SIZE" and value.isdigit() and len(value) < 20:
            continue
        if name == "SMTPUTF8" and not value:
            continue
        raise CommandError(f"455 4.5.4 unsupported MAIL parameter {name[:20]!r}")
    return address


def parse_rcpt(arg: str) -> str:
    """``TO:<address>`` -> the address."""
    address, params = _path(arg, "TO")
    if not address:
        raise CommandError("451 4.1.3 empty recipient address")
    if params:
        raise CommandError(f"455 4.5.4 unsupported RCPT parameter {params[0].partition('=')[0][:20]!r}")
    return address


def parse_xforward(arg: str) -> dict[str, str]:
    """``NAME=value ...`` (values xtext-encoded) -> {NAME: decoded value}; ``[UNAVAILABLE]`` is ""."""
    attrs: dict[str, str] = {}
    if not arg:
        raise CommandError("501 5.5.4 syntax: XFORWARD attribute=value ...")
    for item in arg.split():
        name, eq, value = item.partition("=")
        if not eq or not name.isalpha():
            raise CommandError(f"501 5.5.4 bad XFORWARD attribute {item[:40]!r}")
        decoded = _XTEXT.sub(lambda m: chr(int(m.group(1), 16)), value)
        if len(decoded) > MAX_XFORWARD_VALUE:
            raise CommandError(f"501 5.5.4 XFORWARD {name.upper()} longer than {MAX_XFORWARD_VALUE} characters")
        if any(ord(c) < 32 or ord(c) == 127 for c in decoded):
            raise CommandError(f"501 5.5.4 control character in XFORWARD {name.upper()}")
        attrs[name.upper()] = "" if decoded.upper() in UNAVAILABLE else decoded
    return attrs


def split_extension(address: str, delimiters: str) -> str:
    """The extension of ``address``'s local part: what follows the first delimiter character
    (pipe(8)'s ``${extension}``); "" without one."""
    local = address.rpartition("@")[0] if "@" in address else address
    if local.startswith('"') and local.endswith('"'):
        local = local[1:-1]
    positions = [i for i in (local.find(d) for d in delimiters) if i > 0]
    return local[min(positions) + 1 :] if positions else ""


def received_queue_id(head: bytes) -> str:
    """The queue id in the first header line when it is the Received: line Postfix added on
    queueing this message (pipe(8)'s ``${queue_id}``), else ""."""
    m = _OWN_RECEIVED.match(head[:HEAD])
    return m.group(1).decode("ascii") if m else ""
