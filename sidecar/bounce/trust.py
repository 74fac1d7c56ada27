"""Who may cause a suppression: the ingester's trust model (docs/ingest.md, "Trust model").

Anyone can mail the bounce domain, and everything inside a message is written by its sender:
the addresses it names, the enclosed ``Return-Path``, the ``From``. So a message only *asks*
for a suppression; our own data decides whether it gets one:

* ``ingest.require_verp``: without a valid VERP token nothing is suppressed (``unverified``);
* corroboration (``ingest.require_corroboration``, on by default for the pipe; ``sidecar import
  --require-record``): the address must be the signed VERP token's recipient or in the relay's
  record of recipients it sent to (:mod:`sidecar.recipients`), else ``uncorroborated``;
* the tenant of a complaint comes from our data only (the VERP tenant, else the record's
  tenants for the address), never from the message; a complaint without one is ``no-tenant``.
  Only a configured feedback-loop source (``ingest.feedback_loops``) may suppress globally;
* per-message caps bound how much one message can do (:mod:`sidecar.bounce.record`).

Pure except for the record look-ups, which are made before the recording transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sidecar.bounce.derive import Decision, EventKind
from sidecar.recipients import RecipientLookup
from sidecar.suppression.address import match_key

GLOBAL = ""


def is_feedback_loop(recipient: str, extension: str, sender: str, loops: Iterable[Any]) -> bool:
    """Did the message come to a configured feedback-loop address (and from its sender domain)?"""
    rcpt = recipient.strip().strip("<>").lower()
    if extension:
        local, _, domain = rcpt.rpartition("@")
        suffix = "+" + extension.lower()
        if local.endswith(suffix):
            rcpt = f"{local[: -len(suffix)]}@{domain}"
    sender_domain = sender.strip().strip("<>").rpartition("@")[2].rstrip(".").lower() if "@" in sender else ""
    for loop in loops:
        if loop.recipient != rcpt:
            continue
        want = loop.sender_domain
        if not want or sender_domain == want or sender_domain.endswith("." + want):
            return True
    return False


@dataclass(frozen=True, slots=True)
class Standing:
    """What our own data says about one address a message names."""

    confirmed: bool  # the valid VERP token or the record of recipients names it
    tenants: frozenset[str]  # tenants from our data: the VERP tenant, else the record's


NOBODY = Standing(False, frozenset())


def may_suppress(kind: EventKind, category: str | None) -> bool:
    """Findings that can lead to a suppression (and so are looked up in the record)."""
    return kind == EventKind.COMPLAINT or (kind == EventKind.BOUNCE and category != "block")


def assess(
    findings: Iterable[Any], verified: bool, lookup: RecipientLookup, when: float, case_sensitive_local: bool
) -> dict[str, Standing]:
    """Standing of each address that may suppress. With a valid VERP token every finding is the
    token's recipient (see ``derive.derive``): confirmed, with the token's tenant if it has one."""
    out: dict[str, Standing] = {}
    for f in findings:
        if f.address in out or not may_suppress(f.kind, f.category):
            continue
        if verified and f.tenant:
            out[f.address] = Standing(True, frozenset({f.tenant}))
            continue
        tenants = lookup.tenants_for(match_key(f.address, case_sensitive_local), when)
        out[f.address] = Standing(verified or bool(tenants), frozenset(tenants))
    return out


@dataclass(frozen=True, slots=True)
class Gate:
    """The trust decision for one message's findings."""

    require_verp: bool
    corroborate: bool  # corroboration required (else the message's structure is enough: import)
    complaint_scope: str  # "tenant" | "global": applies to feedback-loop sources only
    verified: bool  # the message carries a valid VERP token
    feedback_loop: bool  # the message came from a configured feedback-loop source
    standings: dict[str, Standing]

    def withheld(self, address: str) -> Decision | None:
        """Why this address may not suppress at all, or None."""
        if self.require_verp and not self.verified:
            return Decision.UNVERIFIED
        if self.corroborate and not self.standings.get(address, NOBODY).confirmed:
            return Decision.UNCORROBORATED
        return None

    def scopes(self, address: str, complaint: bool) -> tuple[Decision | None, list[str]]:
        """(withheld decision or None, the scopes to suppress in: "" = global, else tenants)."""
        held = self.withheld(address)
        if held is not None:
            return held, []
        if not complaint:
            return None, [GLOBAL]  # a dead mailbox is dead for every tenant
        tenants = self.standings.get(address, NOBODY).tenants
        if self.feedback_loop and (self.complaint_scope == "global" or not tenants):
            return None, [GLOBAL]
        if tenants:
            return None, sorted(tenants)
        return Decision.NO_TENANT, []
