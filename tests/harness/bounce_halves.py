"""The labelled bounce corpora split into two fixed halves, and their scores.

Half 1 is where rules are looked at; half 2 is measured before its failures are read (a large
gap between the halves means rules were fitted to samples). The split is by a hash of the file
name only, so it never changes when files are added or the parser changes.

Scores follow the corpus tool's definitions: address recall/precision over failed recipients
of bounce messages, the coarse category over recipients with a labelled reason, hard/soft over
recipients with a labelled ``hard``, permanent/temporary (status class) over the rest.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "data" / "bounces"
CORPORA = {"corpus": DATA / "corpus", "modern": DATA / "modern"}
NOT_FAILURE = frozenset({"delivered", "feedback", "vacation"})

# sisimai reason names -> the coarse categories the modern corpus is labelled with
_COARSE = {
    "hard-invalid-recipient": ("userunknown", "hasmoved", "suspend"),
    "soft-mailbox-full": ("mailboxfull",),
    "dns/host-unknown": ("hostunknown", "notaccept"),
    "network/expired": ("expired", "networkerror", "systemerror", "systemfull", "mailererror", "failedstarttls"),
    "message-too-big": ("mesgtoobig", "exceedlimit"),
    "unknown": ("syntaxerror", "undefined", "onhold"),
    "vacation/auto-reply": ("vacation",),
    "complaint": ("feedback",),
    "delivered": ("delivered",),
}
COARSE = {reason: coarse for coarse, reasons in _COARSE.items() for reason in reasons}


def half(name: str) -> int:
    """1 or 2: the half a file belongs to (the first byte of sha256(name), even or odd)."""
    return 1 + hashlib.sha256(name.encode()).digest()[0] % 2


def coarse(reason: str | None) -> str | None:
    """A reason name or a coarse label -> the coarse category (a block when not listed)."""
    if not reason:
        return None
    if reason in _COARSE or "/" in reason:
        return reason
    return COARSE.get(reason, "block/policy/spam")


def labels(corpus: str, which: int | None = None) -> list[dict]:
    """The label records of ``corpus`` (``corpus`` or ``modern``), of one half or both."""
    path = CORPORA[corpus] / "labels.jsonl"
    out = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [rec for rec in out if which is None or half(rec["file"]) == which]


def _address(value: str | None) -> str:
    return (value or "").strip().strip("<>").strip().lower()


def _permanent(rec: dict) -> bool | None:
    status = str(rec.get("status") or "")
    if status[:1] in ("4", "5"):
        return status[:1] == "5"
    if rec.get("permanent") is not None:
        return bool(rec["permanent"])
    return rec.get("hard")


@dataclass(frozen=True)
class Score:
    messages: int
    recall: float
    precision: float
    coarse: float
    coarse_n: int
    hard: float | None  # None: no recipient with a labelled hard/soft
    hard_n: int
    permanent: float
    misses: tuple[str, ...]  # "file: expected -> got" for every coarse or hard/soft miss

    def line(self) -> str:
        hard = f"{self.hard:6.1%} of {self.hard_n:3d}" if self.hard is not None else "     -       "
        return (
            f"{self.messages:4d} msgs  recall {self.recall:6.1%}  precision {self.precision:6.1%}  "
            f"coarse {self.coarse:6.1%} of {self.coarse_n:3d}  hard/soft {hard}  perm/temp {self.permanent:6.1%}"
        )


def score(parse: Callable[[bytes], list[dict]], records: Iterable[dict], folder: Path) -> Score:
    """Score ``parse`` (raw bytes -> the JSON of failed recipients) on ``records``."""
    m: Counter[str] = Counter()
    misses = []
    records = list(records)
    for rec in records:
        got: dict[str, dict] = {}
        for p in parse((folder / rec["file"]).read_bytes()):
            got.setdefault(_address(p["address"]), p)
        failed = {a for a, p in got.items() if p["reason"] not in NOT_FAILURE}
        if rec["kind"] == "bounce":
            expected = {
                _address(r["address"]) for r in rec["recipients"] if r.get("address") and r["reason"] not in NOT_FAILURE
            }
            m["exp"] += len(expected)
            m["pred"] += len(failed)
            m["tp"] += len(expected & failed)
        for r in rec["recipients"]:
            if not r.get("address"):
                continue
            p = got.get(_address(r["address"]))
            if r.get("reason"):
                m["coarse_n"] += 1
                ok = p is not None and coarse(p["reason"]) == coarse(r["reason"])
                m["coarse"] += ok
                if not ok:
                    misses.append(f"{rec['file']}: {coarse(r['reason'])} -> {p and coarse(p['reason'])}")
            if r.get("hard") is not None:
                m["hard_n"] += 1
                ok = p is not None and p["hard"] == r["hard"]
                m["hard"] += ok
                if not ok:
                    misses.append(f"{rec['file']}: hard={r['hard']} -> {p and p['hard']}")
            expected_perm = _permanent(r) if r.get("reason") not in NOT_FAILURE else None
            if expected_perm is not None:
                m["perm_n"] += 1
                m["perm"] += p is not None and _permanent(p) == expected_perm
    return Score(
        len(records),
        m["tp"] / max(m["exp"], 1),
        m["tp"] / max(m["pred"], 1),
        m["coarse"] / max(m["coarse_n"], 1),
        m["coarse_n"],
        m["hard"] / m["hard_n"] if m["hard_n"] else None,
        m["hard_n"],
        m["perm"] / max(m["perm_n"], 1),
        tuple(misses),
    )


def score_half(parse: Callable[[bytes], list[dict]], corpus: str, which: int | None) -> Score:
    return score(parse, labels(corpus, which), CORPORA[corpus])
