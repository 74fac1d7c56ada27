"""Wrong suppressions through ``sidecar import`` of a labelled corpus (used by
bench/bench_wrong_suppressions.py and tests/integration/test_import_corpus.py).

For each corpus (a folder with ``labels.jsonl`` and the ``.eml`` files it names) the labelled
messages are imported with the real command (``sidecar import --db sqlite:///... DIR``) and the
database's events are compared with the labels, message by message (joined on the sha256 of
the raw message):

* **wrong suppressions**: events whose decision suppresses (``suppress-hard``, ``suppress-soft``,
  ``suppress-complaint``, also when ``(covered)`` by an earlier one) for an address that is not
  a labelled failed recipient of that message: not labelled at all, labelled as an auto-reply
  or a delivery, or a delay (Action ``delayed``) suppressed as a hard bounce. A complaint
  suppression counts as right only for a labelled complainant. Target 0. Labels name the
  address the reporting MTA tried (a DSN's Final-Recipient); a suppression names the address
  we sent to (its Original-Recipient, when the remote side rewrote it: docs/bounces.md, "Which
  address"). A suppression of the Original-Recipient the message itself gives for a labelled
  failed recipient is right, and counted apart ("under the Original-Recipient").
* **hard failures suppressed**: of the labelled hard failures (``hard`` true, or for labels
  without ``hard`` a permanent invalid-recipient or host-unknown failure), the share whose
  address got a suppressing decision from that message. Target >= 90%.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
from collections import defaultdict

NOT_FAILURE = frozenset({"delivered", "feedback", "vacation"})
# labels without "hard" (coarse categories): a permanent failure of the recipient itself
_HARD_CATEGORIES = frozenset({"hard-invalid-recipient", "dns/host-unknown"})


def _norm(address: str | None) -> str:
    return (address or "").strip().strip("<>").strip().lower()


def _permanent(label: dict) -> bool | None:
    status = str(label.get("status") or "")
    if status[:1] in ("4", "5"):
        return status[:1] == "5"
    if label.get("permanent") is not None:
        return bool(label["permanent"])
    return label.get("hard")


def _hard_failure(label: dict) -> bool:
    if label.get("reason") in NOT_FAILURE or label.get("action") == "delayed":
        return False
    if label.get("hard") is not None:
        return bool(label["hard"])
    return _permanent(label) is True and label.get("reason") in _HARD_CATEGORIES


def _right(decision: str, label: dict | None) -> bool:
    """May this suppressing decision come from a message with this label for the address?"""
    if label is None:
        return False
    reason = label.get("reason")
    if decision.startswith("suppress-complaint"):
        return reason == "feedback"
    if reason in NOT_FAILURE:
        return False
    if decision.startswith("suppress-hard"):
        return label.get("action") != "delayed" and _permanent(label) is not False
    return True


def _labels(corpus: str) -> list[dict]:
    with open(os.path.join(corpus, "labels.jsonl"), encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _originals(sidecar: str, paths: list[str]) -> dict[str, dict[str, str]]:
    """Per file: Original-Recipient -> the failed address it was rewritten to (``sidecar parse``)."""
    done = subprocess.run(
        [sidecar, "parse", "--json", "--paths-from-stdin"],
        input="\n".join(paths) + "\n",
        capture_output=True,
        text=True,
        check=False,
    )
    out: dict[str, dict[str, str]] = {}
    for line in done.stdout.splitlines():
        rec = json.loads(line)
        name = os.path.basename(rec["file"])
        for r in rec.get("results") or []:
            if r.get("original_recipient") and r["original_recipient"] != r["address"]:
                out.setdefault(name, {})[_norm(r["original_recipient"])] = _norm(r["address"])
    return out


def run(corpus: str, sidecar: str, require_record: bool = False) -> dict:
    labels = _labels(corpus)
    by_sha: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="wrongsup-") as tmp:
        msgs = os.path.join(tmp, "messages")
        os.mkdir(msgs)
        for rec in labels:
            src = os.path.join(corpus, rec["file"])
            with open(src, "rb") as fh:
                by_sha[hashlib.sha256(fh.read()).hexdigest()] = rec
            shutil.copyfile(src, os.path.join(msgs, rec["file"]))
        db = os.path.join(tmp, "sidecar.db")
        cmd = [sidecar, "import", "--db", f"sqlite:///{db}", "--no-progress", msgs]
        if require_record:
            cmd.insert(2, "--require-record")
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {done.returncode}: {done.stderr.strip()}")
        summary = done.stdout.strip()
        conn = sqlite3.connect(db)
        rows = conn.execute(
            "SELECT r.sha256, e.address, e.decision FROM events e JOIN raw_messages r ON r.id = e.message_id"
        ).fetchall()
        conn.close()
    originals = _originals(sidecar, [os.path.join(corpus, rec["file"]) for rec in labels])
    suppressed: dict[str, set[str]] = defaultdict(set)
    wrong: list[tuple[str, str, str]] = []
    as_original = 0
    for sha, address, decision in rows:
        if not decision or not decision.startswith("suppress-"):
            continue
        rec = by_sha.get(sha)
        if rec is None:
            continue
        addr = _norm(address)
        by_address = {_norm(r.get("address")): r for r in rec["recipients"]}
        final = originals.get(rec["file"], {}).get(addr)
        if addr not in by_address and final in by_address:
            addr = final  # suppressed under the Original-Recipient the message gives for it
            as_original += 1
        suppressed[rec["file"]].add(addr)
        if not _right(decision, by_address.get(addr)):
            wrong.append((rec["file"], addr, decision))
    hard = missed = 0
    missed_list: list[tuple[str, str]] = []
    for rec in labels:
        if rec.get("kind", "bounce") != "bounce":
            continue
        for r in rec["recipients"]:
            if _hard_failure(r):
                hard += 1
                if _norm(r.get("address")) not in suppressed[rec["file"]]:
                    missed += 1
                    missed_list.append((rec["file"], _norm(r.get("address"))))
    return {
        "corpus": corpus,
        "messages": len(labels),
        "import": summary,
        "wrong_suppressions": len(wrong),
        "as_original": as_original,
        "hard_failures": hard,
        "hard_suppressed": hard - missed,
        "hard_suppressed_pct": round(100.0 * (hard - missed) / hard, 1) if hard else None,
        "wrong": sorted(wrong),
        "missed": sorted(missed_list),
    }
