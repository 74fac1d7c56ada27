"""DMARC checks (RFC 7489): the record (at the domain or its organisational domain), policy,
reporting address, and whether our SPF (envelope) and DKIM domains align with the From domain.

The organisational domain comes from the Public Suffix List snapshot that the
``publicsuffixlist`` package ships (nothing is fetched at run time).
"""

from __future__ import annotations

import functools

from publicsuffixlist import PublicSuffixList

from sidecar.domains.dkim import tags
from sidecar.domains.lookup import Dns, DnsTempError, normal
from sidecar.domains.results import Result, State

POLICIES = ("none", "quarantine", "reject")


@functools.lru_cache(maxsize=1)
def _psl() -> PublicSuffixList:
    return PublicSuffixList()


def org_domain(domain: str) -> str:
    """The organisational domain: the public suffix plus one label (``mail.example.co.uk`` -> ``example.co.uk``)."""
    d = normal(domain)
    return _psl().privatesuffix(d) or d


def aligned(a: str, b: str, mode: str) -> bool:
    """``a`` aligns with ``b``: the same name (strict ``s``) or the same organisational domain (relaxed)."""
    if mode == "s":
        return normal(a) == normal(b)
    return org_domain(a) == org_domain(b)


def find_record(dns: Dns, domain: str) -> tuple[str, list[str]]:
    """(where, DMARC records) at ``_dmarc.domain``, else at the organisational domain."""
    where = normal(domain)
    records = [t for t in dns.txt(f"_dmarc.{where}") if t.startswith("v=DMARC1")]
    org = org_domain(where)
    if not records and org != where:
        where, records = org, [t for t in dns.txt(f"_dmarc.{org}") if t.startswith("v=DMARC1")]
    return where, records


def check_dmarc(dns: Dns, domain: str, envelope_domain: str, dkim_domain: str) -> list[Result]:
    try:
        where, records = find_record(dns, domain)
    except DnsTempError as e:
        return [Result("dmarc.record", State.TEMPERROR, f"DMARC of {domain} not checked: {e}")]
    out: list[Result] = []
    t: dict[str, str] = {}
    if not records:
        out.append(
            Result(
                "dmarc.record",
                State.FAIL,
                f"no DMARC record at _dmarc.{normal(domain)} nor at its organisational domain "
                "(Gmail and Yahoo require one of bulk senders)",
                f'publish _dmarc.{org_domain(domain)}. TXT "v=DMARC1; p=none; rua=mailto:dmarc-reports@'
                f'{org_domain(domain)}", then move to p=quarantine once the reports show your mail aligned',
            )
        )
    elif len(records) > 1:
        out.append(
            Result(
                "dmarc.record",
                State.FAIL,
                f"{len(records)} DMARC records at _dmarc.{where}: receivers ignore them all",
                "publish exactly one",
            )
        )
    else:
        t = tags(records[0])
        out += _policy(t, where, normal(domain) != where)
    adkim, aspf = t.get("adkim", "r"), t.get("aspf", "r")
    spf_ok, dkim_ok = aligned(envelope_domain, domain, aspf), aligned(dkim_domain, domain, adkim)
    mode = {"s": "strict", "r": "relaxed"}
    for name, ok, other_ok, d, m, tag in (
        ("spf", spf_ok, dkim_ok, envelope_domain, aspf, "aspf"),
        ("dkim", dkim_ok, spf_ok, dkim_domain, adkim, "adkim"),
    ):
        check = f"dmarc.alignment.{name}"
        what = "envelope sender (bounce) domain" if name == "spf" else "DKIM signing domain (d=)"
        if ok:
            out.append(Result(check, State.PASS, f"{what} {d} aligns with {domain} ({mode.get(m, m)})"))
            continue
        fix = (
            f"use a bounce domain under {org_domain(domain)} (postfix.bounce_domain)"
            if name == "spf"
            else f"sign with d={domain} (or a domain under {org_domain(domain)})"
        )
        if m == "s":
            fix += f", or relax {tag}=s to {tag}=r"
        out.append(
            Result(
                check,
                State.WARN if other_ok else State.FAIL,
                f"{what} {d} does not align with {domain} ({mode.get(m, m)})"
                + ("" if other_ok else ": DMARC fails for your mail"),
                fix,
            )
        )
    return out


def _policy(t: dict[str, str], where: str, inherited: bool) -> list[Result]:
    p, sp = t.get("p", ""), t.get("sp", "")
    applies = (sp or p) if inherited else p
    src = f"_dmarc.{where}" + (" (organisational domain)" if inherited else "")
    if p not in POLICIES or (sp and sp not in POLICIES):
        bad = "p" if p not in POLICIES else "sp"
        return [
            Result(
                "dmarc.record",
                State.FAIL,
                f"{src}: {bad}={t.get(bad, '')!r} is not none, quarantine or reject",
                f"set {bad}=none, {bad}=quarantine or {bad}=reject",
            )
        ]
    desc = f"{src}: p={p}" + (f", sp={sp}" if sp else "")
    out = []
    if applies == "none":
        out.append(
            Result(
                "dmarc.record",
                State.WARN,
                f"{desc}: monitoring only, forged mail is still delivered",
                "move to p=quarantine, then p=reject, once the aggregate reports show all your mail aligned",
            )
        )
    else:
        out.append(Result("dmarc.record", State.PASS, desc))
    rua = t.get("rua", "")
    if rua:
        out.append(Result("dmarc.rua", State.PASS, f"aggregate reports go to {rua}"))
    else:
        out.append(
            Result(
                "dmarc.rua",
                State.WARN,
                f"{src} asks for no aggregate reports (no rua=)",
                f"add rua=mailto:dmarc-reports@{where} to see who sends as your domain",
            )
        )
    return out
