"""SPF checks (RFC 7208): one record, its syntax, its DNS lookups, its ``all``, and each relay IP.

The evaluation is pyspf's. pyspf looks names up through its module-level ``DNSLookup``; this
module replaces it once with a function that uses the :class:`Dns` of the calling thread when
one is set (``_routed``), and pyspf's own lookup otherwise: so checks stay on the configured
resolvers and bounds, and any other pyspf user in the process is unaffected.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import spf as pyspf

from sidecar.domains.lookup import Dns, DnsTempError
from sidecar.domains.results import Result, State

MAX_LOOKUPS = pyspf.MAX_LOOKUP  # 10, RFC 7208 4.6.4
MAX_VOID = pyspf.MAX_VOID_LOOKUPS  # 2
NOWHERE = "240.0.0.1"  # a reserved address no record should authorise: evaluates every term

_local = threading.local()
_pyspf_lookup = pyspf.DNSLookup


def _lookup(name: str, qtype: str, strict: Any = True, timeout: Any = None) -> list[tuple[tuple[str, str], Any]]:
    dns: Dns | None = getattr(_local, "dns", None)
    if dns is None:
        return list(_pyspf_lookup(name, qtype, strict, timeout))
    try:
        records = dns.query(name, qtype).records
    except DnsTempError as e:
        raise pyspf.TempError(f"DNS {e}") from None
    out: list[tuple[tuple[str, str], Any]] = []
    for r in records:
        if qtype in ("A", "AAAA"):
            out.append(((name, qtype), r.address))
        elif qtype == "MX":
            out.append(((name, qtype), (r.preference, r.exchange)))
        elif qtype == "PTR":
            out.append(((name, qtype), r.target.to_text(True)))
        elif qtype in ("TXT", "SPF"):
            out.append(((name, qtype), r.strings))
    return out


pyspf.DNSLookup = _lookup


@contextmanager
def _routed(dns: Dns) -> Iterator[None]:
    _local.dns = dns
    try:
        yield
    finally:
        _local.dns = None


def spf_records(texts: list[str]) -> list[str]:
    return [t for t in texts if t.lower() == "v=spf1" or t.lower().startswith("v=spf1 ")]


def evaluate(dns: Dns, ip: str, domain: str, helo: str = "") -> tuple[str, str, int, int]:
    """(result, explanation, DNS-querying terms, void lookups) of ``ip`` sending for ``domain``."""
    with _routed(dns):
        q = pyspf.query(i=ip, s=f"postmaster@{domain}", h=helo or domain, strict=True)
        result, _code, text = q.check()
    return str(result), str(text), int(q.lookups), int(q.void_lookups)


def check_spf(dns: Dns, domain: str, relay_ips: list[str], helo: str = "") -> list[Result]:
    try:
        records = spf_records(dns.txt(domain))
    except DnsTempError as e:
        return [Result("spf.record", State.TEMPERROR, f"SPF of {domain} not checked: {e}")]
    example = " ".join(f"{_mech(ip)}:{ip}" for ip in relay_ips) or "ip4:YOUR.RELAY.IP"
    if not records:
        return [
            Result(
                "spf.record",
                State.FAIL,
                f"{domain} has no SPF record",
                f'publish one TXT record: {domain}. TXT "v=spf1 {example} -all"',
            )
        ]
    out = [_all(records)]
    if len(records) > 1:
        out.insert(
            0,
            Result(
                "spf.record",
                State.FAIL,
                f"{domain} has {len(records)} SPF records; receivers treat that as a permanent error",
                "merge them into one TXT record starting v=spf1",
            ),
        )
        return out
    result, text, lookups, void = evaluate(dns, NOWHERE, domain, helo)
    if result == "temperror":
        return [Result("spf.record", State.TEMPERROR, f"SPF of {domain} not evaluated: {text}"), *out]
    limits = f"{lookups} DNS-querying terms (limit {MAX_LOOKUPS}), {void} void lookups (limit {MAX_VOID})"
    too_many = lookups > MAX_LOOKUPS or "DNS lookups" in text
    if result == "permerror" and (too_many or "oid lookup" in text):
        fix = (
            "replace include:, a, mx and exists terms by ip4:/ip6: ranges, or drop senders you no longer use"
            if too_many
            else "remove the terms that name domains which do not exist or have no such record"
        )
        out.insert(0, Result("spf.record", State.PASS, f"one SPF record: {records[0]}"))
        out.insert(1, Result("spf.lookups", State.FAIL, f"{limits}: receivers give a permanent error ({text})", fix))
        return out
    if result == "permerror":
        return [
            Result(
                "spf.record",
                State.FAIL,
                f"SPF record of {domain} is invalid: {text}",
                "correct the record (RFC 7208 syntax): check each mechanism and include",
            ),
            *out,
        ]
    out.insert(0, Result("spf.record", State.PASS, f"one SPF record: {records[0]}"))
    out.insert(1, Result("spf.lookups", State.PASS, limits))
    for ip in relay_ips:
        out.append(_relay(dns, domain, ip, helo))
    return out


def _relay(dns: Dns, domain: str, ip: str, helo: str) -> Result:
    check = f"spf.relay:{ip}"
    result, text, _, _ = evaluate(dns, ip, domain, helo)
    if result == "pass":
        return Result(check, State.PASS, f"{domain}'s SPF authorises {ip}")
    if result == "temperror":
        return Result(check, State.TEMPERROR, f"SPF of {domain} for {ip} not evaluated: {text}")
    return Result(
        check,
        State.FAIL,
        f"{domain}'s SPF does not authorise the relay {ip} (result {result})",
        f"add {_mech(ip)}:{ip} to {domain}'s SPF record, before its all",
    )


def _mech(ip: str) -> str:
    return "ip6" if ipaddress.ip_address(ip).version == 6 else "ip4"


def _all(records: list[str]) -> Result:
    """The worst ``all`` qualifier of the records: +all authorises the whole Internet."""
    worst: Result | None = None
    for rec in records:
        terms = rec.split()[1:]
        quals = [t[:-3] or "+" for t in terms if t.lower().lstrip("+-~?") == "all"]
        if any(q == "+" for q in quals):
            return Result(
                "spf.all",
                State.FAIL,
                f"{rec!r} ends with +all: every host on the Internet may send as this domain",
                "end the record with -all (or ~all while you check)",
            )
        if quals and quals[-1] == "?":
            worst = Result(
                "spf.all", State.WARN, f"{rec!r} ends with ?all (neutral)", "end the record with -all or ~all"
            )
        elif not quals and not any(t.lower().startswith("redirect=") for t in terms):
            worst = worst or Result(
                "spf.all",
                State.WARN,
                f"{rec!r} has no all: other senders get a neutral result",
                "end the record with -all or ~all",
            )
    return worst or Result("spf.all", State.PASS, "the record ends with -all, ~all or a redirect=")
