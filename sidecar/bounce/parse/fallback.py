"""flufl.bounce, the last resort: its detectors on a bounded prefix of the message.

Only run when nothing exact or cheaper found a recipient; only on the first ``FLUFL_BYTES``,
and not at all for a hostile structure (see :func:`from_flufl`).
"""

from __future__ import annotations

import email

from sidecar.bounce.parse import dsn
from sidecar.bounce.parse.budget import FLUFL_BYTES, FLUFL_PARTS, Budget
from sidecar.bounce.parse.classify import classify, provider_reason
from sidecar.bounce.parse.results import FailedRecipient, Limit

_HOSTILE = frozenset({Limit.DEPTH, Limit.PARTS, Limit.HEADER_BYTES})


def from_flufl(raw: bytes, budget: Budget) -> list[FailedRecipient]:
    """flufl.bounce's detectors, on the first ``FLUFL_BYTES`` of the message only.

    Skipped for a hostile structure: the stdlib parser under flufl.bounce is quadratic in the
    nesting depth, and its parameter split in the length of a Content-Type header.
    """
    # imported lazily: slow, and only the last resort
    from flufl.bounce import all_failures

    if len(raw) > FLUFL_BYTES:
        raw = raw[:FLUFL_BYTES]
        budget.hit(Limit.FALLBACK)
    if budget.limits & _HOSTILE or raw.lower().count(b"content-type:") > FLUFL_PARTS:
        budget.hit(Limit.FALLBACK)
        return []
    try:
        temporary, permanent = all_failures(email.message_from_bytes(raw))
    except Exception:
        return []
    out = []
    for raw, is_permanent in [(a, True) for a in permanent] + [(a, False) for a in temporary if a not in permanent]:
        addr = dsn.address_value(raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw))
        if not addr or "@" not in addr:
            continue
        v = provider_reason(addr, classify("5.0.0" if is_permanent else "4.0.0", None, "failed"))
        out.append(
            FailedRecipient(addr, v.category, v.reason, v.hard, v.status, "failed", None, None, evidence=v.evidence)
        )
    return out
