"""The rules every stored suppression text field follows, whatever the entry point.

No control characters (C0 including TAB/CR/LF/NUL, DEL, C1, U+2028/U+2029 line and paragraph
separators) and no lone surrogates: such values would split log lines, CSV rows and reject
replies, or fail to encode. Lengths are the schema's column sizes.
"""

from __future__ import annotations

import re

from sidecar.units import InvalidValue

CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")

MAX_LEN = {"address": 320, "tenant": 255, "reason": 64, "category": 32, "source": 32, "note": 4000}


def control_problem(value: str) -> str | None:
    """What is wrong with ``value`` (one line), or None."""
    m = CONTROL.search(value)
    if m is None:
        return None
    c = m.group()
    if "\ud800" <= c <= "\udfff":
        return f"not valid Unicode (a lone surrogate U+{ord(c):04X} at character {m.start() + 1})"
    return f"control character U+{ord(c):04X} at character {m.start() + 1}"


def check_text(field: str, value: str | None, max_len: int | None = None) -> str | None:
    """``value`` itself if it may be stored in ``field``, else InvalidValue naming the field."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidValue(field, "expected a string")
    limit = MAX_LEN.get(field, 4000) if max_len is None else max_len
    if len(value) > limit:
        raise InvalidValue(field, f"longer than {limit} characters")
    problem = control_problem(value)
    if problem:
        raise InvalidValue(field, problem)
    return value
