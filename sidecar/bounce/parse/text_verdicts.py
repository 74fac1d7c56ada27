"""The text-bounce stage: recipients found in a bounce's prose, and the verdict on each.

Runs when no report part named a recipient (see :mod:`.message`): the addresses come from
:mod:`.textbounce` (or a reporting-MTA family's list of refusals, :mod:`.reporting_mta`), the
verdicts from :mod:`.classify`, helped by the family's own sentences.
"""

from __future__ import annotations

import re
from email.message import Message

from sidecar.bounce.parse import arf, dsn, mime, reporting_mta, textbounce
from sidecar.bounce.parse.budget import MAX_RECIPIENTS, Budget
from sidecar.bounce.parse.classify import Verdict, classify, provider_reason, reply_code
from sidecar.bounce.parse.results import FailedRecipient
from sidecar.bounce.parse.status import RETURNED

# "<final@b> (expanded from <sent@a>): ..." (Postfix), "final@b (generated from sent@a)" (Exim): the
# alias the mail was sent to, which a suppression must name (docs/bounces.md, "Which address")
_ALIAS_OF = re.compile(
    r"^\s*<?[^<>()\s]{3,320}>?:?\s*\((?:expanded|generated) from:?\s*<?([^<>()\s]{3,320}?)>?\s*\)", re.I
)


def alias_source(diagnostic: str | None) -> str | None:
    """The address an alias or forward of a text recipient was expanded from, if its block says so."""
    m = _ALIAS_OF.match(diagnostic or "")
    if m is None:
        return None
    addr = dsn.address_value(m.group(1))
    return addr if addr and dsn.usable(addr) else None


def _exclusions(msg: Message, original: Message | None) -> set[str]:
    out: set[str] = set()
    sources = [mime.header(msg, n) for n in ("From", "To", "Reply-To", "Return-Path")]
    if original is not None:
        sources += [mime.header(original, n) for n in ("From", "Return-Path", "Sender", "Reply-To")]
    for value in sources:
        for piece in value.split(","):
            addr = dsn.address_value(piece)
            if addr and "@" in addr:
                out.add(addr)
    return out


def list_refusals(text: str, budget: Budget) -> list[FailedRecipient]:
    out = []
    refusals = reporting_mta.list_refusals(text)
    budget.omit(len(refusals) - MAX_RECIPIENTS)
    for address, diagnostic, reason in refusals[:MAX_RECIPIENTS]:
        v = classify(None, diagnostic, None, None, explicit=reason)
        out.append(
            FailedRecipient(
                address,
                v.category,
                v.reason,
                v.hard,
                v.status or RETURNED,
                "failed",
                None,
                diagnostic,
                evidence=v.evidence,
            )
        )
    return out


def from_text(
    msg: Message, text: str, original: Message | None, family: str | None, budget: Budget
) -> list[FailedRecipient]:
    own = (dsn.address_value(mime.header(msg, "From")) or "").rpartition("@")[2]
    own = ".".join(own.split(".")[-2:])
    found = textbounce.find_recipients(text, _exclusions(msg, original), own, budget) if text else []
    if not found:
        addr = arf.original_recipient(original) if original is not None else textbounce.quoted_original_recipient(text)
        if addr:
            found = [textbounce.TextRecipient(addr, textbounce.report_section(text)[:2000], None)]
    out = []
    whole = " ".join(textbounce.report_section(text).split())[:4000] if text else ""
    family_text = " ".join(text[:4000].lower().split()) if family and len(found) == 1 else ""
    # addresses that share their block (a list on one line) share its verdict: computed once
    verdicts: dict[tuple[str, str | None], tuple[Verdict, str | None]] = {}
    on_whole: dict[tuple[str | None, str | None], Verdict] = {}  # the same for every recipient
    for n, t in enumerate(found):
        if n % 16 == 15 and budget.expired():
            budget.omit(len(found) - n)
            break
        known = verdicts.get((t.diagnostic, t.command))
        if known is None:
            known = _verdict(t, family, family_text, whole, msg, len(found), on_whole)
            verdicts[t.diagnostic, t.command] = known
        verdict, remote = known
        if verdict.reason == "delivered":
            continue
        verdict = provider_reason(t.address, verdict)
        action = (
            "delayed" if verdict.status and verdict.status.startswith("4") and "delay" in whole.lower() else "failed"
        )
        out.append(
            FailedRecipient(
                t.address,
                verdict.category,
                verdict.reason,
                verdict.hard,
                verdict.status or RETURNED,
                action,
                remote,
                t.diagnostic or None,
                original_recipient=alias_source(t.diagnostic),
                evidence=verdict.evidence,
            )
        )
    return out


def _verdict(
    t: textbounce.TextRecipient,
    family: str | None,
    family_text: str,
    whole: str,
    msg: Message,
    count: int,
    on_whole: dict[tuple[str | None, str | None], Verdict],
) -> tuple[Verdict, str | None]:
    """The verdict on one text recipient's block, and the remote MTA it names."""
    session = family not in reporting_mta.NO_SESSION
    explicit = reporting_mta.family_reason(family, " ".join(t.diagnostic.lower().split()), msg) if family else None
    if explicit is None and family_text:
        explicit = reporting_mta.family_reason(family, family_text, msg)  # the family's sentence anywhere
    remote = textbounce.remote_host(t.diagnostic) or (textbounce.remote_host(whole) if count == 1 else None)
    verdict = classify(None, t.diagnostic, None, t.command, explicit=explicit, remote_mta=remote, session=session)
    # The recipient's block named no reason, or named one without any code while the report
    # (one recipient) quotes the remote server's reply further on: the whole report decides
    # when it carries more (a reason at all, or a status code against none).
    vague = verdict.status is None and count == 1 and reply_code(whole) is not None
    if (verdict.reason in ("onhold", "undefined") or vague) and whole:
        again = on_whole.get((t.command, remote))
        if again is None:
            explicit = reporting_mta.family_reason(family, whole.lower(), msg) if family else None
            again = classify(None, whole, None, t.command, explicit=explicit, remote_mta=remote, session=session)
            on_whole[t.command, remote] = again
        if verdict.reason in ("onhold", "undefined") or (again.status is not None and again.reason != "onhold"):
            verdict = again
    return verdict, remote
