"""Choosing one enhanced status code from a DSN ``Status:`` field and the diagnostic text.

A report often carries several codes: the reporting MTA's ``Status:`` (sometimes a generic
``5.0.0``/``5.1.0`` of its own) and the remote server's reply quoted in the diagnostic
(``550-'5.7.1 ... Access denied'``). The more specific one is kept, by the rules of
sisimai's ``status.Prefer``/``status.Find`` (BSD-2, see docs/bounces.md): a code whose
class agrees with the SMTP reply code wins; ``X.0.0`` and ``X.Y.0`` give way to a precise
code; some codes are known to be vague (``4.4.7`` expired, ``4.7.0``, ``5.3.x`` system,
``X.5.1/2/4/5`` protocol) and give way to the quoted one.
"""

from __future__ import annotations

import re

# a status code not preceded by a digit, dot, slash or "v" (version numbers), subject 0-7
_CODE = re.compile(r"(?<![\d./vV])([245])\.([0-7])\.(\d{1,3})(?!\d)")
_VAGUE_FIELD = frozenset({"4.4.7", "4.7.0"})
_PROTOCOL = (".5.1", ".5.2", ".5.4", ".5.5")
RETURNED = "5.0.0"  # a returned message with no code at all: a permanent failure of unknown detail


def _zero(code: str) -> bool:
    """X.0.Z or X.Y.0 (something about the code is undefined)."""
    return ".0" in code


def _zero_zero(code: str) -> bool:
    return code[1:5] == ".0.0" and len(code) == 5


def prefer(field: str | None, found: str | None, reply: str | None = None) -> str | None:
    """The better of the ``Status:`` field and a code ``found`` in the text."""
    if not field:
        return found
    if not found or field == found:
        return field
    if reply and field[0] != found[0]:
        if reply[0] == field[0]:
            return field
        if reply[0] == found[0]:
            return found
    if _zero_zero(field):
        return field if _zero_zero(found) else found
    if _zero(field) and not _zero(found):
        return found
    if _zero_zero(found):
        return field
    if field in _VAGUE_FIELD or field.startswith("5.3.") or field[1:5] in _PROTOCOL:
        return found
    if field == "5.1.1":
        return field if _zero(found) or found.startswith("5.5.") else found
    if field == "5.1.3" and found.startswith("5.7."):
        return found
    return field


def find(text: str, reply_class: str | None = None) -> str | None:
    """The status code the text means (all codes in it folded with :func:`prefer`)."""
    if not text or "." not in text:
        return None
    codes: list[str] = []
    vague = None
    for m in _CODE.finditer(text):
        if reply_class and m.group(1) != reply_class:
            continue
        code = f"{m.group(1)}.{m.group(2)}.{m.group(3)}"
        if _zero_zero(code) or code == "4.4.7":
            vague = code  # kept only when nothing better is found
            continue
        codes.append(code)
    if vague:
        codes.append(vague)
    if not codes:
        return None
    chosen: str | None = codes[0]
    for code in codes[1:]:
        chosen = prefer(chosen, code)
    return chosen
