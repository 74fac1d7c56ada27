"""A batch of import CSV rows checked with a few calls over whole columns, when it can be.

An import list is mostly alike: plain ASCII addresses over a few thousand domains, one tenant,
one reason, no times of its own. For such a batch the per-row checks (the address pattern, the
text fields, the times) give the same answer for every row, so they are asked once per column:
one pattern over the batch's addresses joined by newlines, the domains looked up in the memo the
per-row check keeps, the text fields checked once when a column holds one value. Anything else
(a new domain, a quote, a time, a second value in a text column, a row of another width) sends
the whole batch through the per-row check, which gives the values and the errors (``line N:
field: problem``); so the result is always the per-row one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from sidecar.suppression.rows import CSV_FIELDS, DomainMemo, Normaliser, Uniform

# PLAIN (sidecar.suppression.rows) for every line of the joined addresses
_LINES = re.compile("(?:[!#-;=?A-~]{1,256}@[!#-;=?A-~]+\n)*[!#-;=?A-~]{1,256}@[!#-;=?A-~]+")
_DOMAINS = re.compile("@([!#-;=?A-~]+)")
_TEXT = ("tenant", "reason", "category", "source", "note")


def fast_batch(batch: Sequence[list[str]], width: int, pos: dict[str, int], normalise: Normaliser) -> Uniform | None:
    """The checked rows of ``batch`` (each of ``width`` cells, header positions ``pos``), or None
    when the batch must go through the per-row check."""
    memo = normalise.canon
    if not isinstance(memo, DomainMemo) or not memo.on or set(map(len, batch)) != {width}:
        return None
    cols = list(zip(*batch, strict=True))
    for f in ("created_at", "expires_at"):
        if f in pos and any(cols[pos[f]]):
            return None
    for f in CSV_FIELDS:  # the export's formula quote, anywhere at a cell's start: per row
        if f in pos and "\n'" in "\n" + "\n".join(cols[pos[f]]):
            return None
    for f in _TEXT:
        if f in pos and len(set(cols[pos[f]])) != 1:
            return None
    addrs = cols[pos["address"]]
    joined = "\n".join(addrs)
    if max(map(len, addrs)) > 320 or not _LINES.fullmatch(joined):
        return None
    domains = set(_DOMAINS.findall(joined))
    known = memo.domains
    if not domains <= known.keys():
        return None  # the per-row check learns them
    if memo.lower and all(known[d] == d.lower() for d in domains):
        out: Sequence[str] = joined.lower().split("\n")
    elif not memo.lower and all(known[d] == d for d in domains):
        out = addrs
    else:
        return None
    try:
        rest = normalise(*(batch[0][pos[f]] if f in pos else "" for f in CSV_FIELDS))[1:]
    except ValueError:
        return None
    return Uniform(out, rest)
