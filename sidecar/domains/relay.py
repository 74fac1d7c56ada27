"""Checks of each relay IP: PTR, forward-confirmed reverse DNS, HELO name, DNS blocklists (RFC 5782).

Only our own relay IPs are ever looked up on a blocklist, and each answer is kept for its TTL.
An answer in 127.255.255.0/24 (or outside 127.0.0.0/8) is the list refusing the query (an
unregistered or public resolver, too many queries): a query error, not a listing.
"""

from __future__ import annotations

import ipaddress

import dns.reversename

from sidecar.domains.lookup import Dns, DnsTempError, normal
from sidecar.domains.results import Result, State

QUERY_ERRORS = ipaddress.ip_network("127.255.255.0/24")
LOOPBACK = ipaddress.ip_network("127.0.0.0/8")


def check_rdns(dns: Dns, ip: str, helo: str) -> list[Result]:
    try:
        names = dns.ptr(ip)
    except DnsTempError as e:
        return [Result(f"rdns.ptr:{ip}", State.TEMPERROR, f"PTR of {ip} not checked: {e}")]
    want = normal(helo) if helo else "mail.example.com"
    if not names:
        return [
            Result(
                f"rdns.ptr:{ip}",
                State.FAIL,
                f"{ip} has no PTR record (Gmail and Yahoo refuse or spam-folder such mail)",
                f"ask whoever owns {ip} (your hosting provider) to set its reverse DNS to {want}",
            ),
            Result(f"rdns.fcrdns:{ip}", State.FAIL, f"no PTR of {ip} to confirm", f"set the PTR of {ip} to {want}"),
        ]
    out = [
        Result(f"rdns.ptr:{ip}", State.PASS, f"{ip} PTR {names[0]}")
        if len(names) == 1
        else Result(
            f"rdns.ptr:{ip}",
            State.WARN,
            f"{ip} has {len(names)} PTR records ({', '.join(names)}); receivers use one at random",
            f"keep one PTR record for {ip}",
        )
    ]
    confirmed, seen, err = "", [], ""
    for name in names:
        try:
            addrs = dns.addresses(name, ("AAAA",) if ":" in ip else ("A",))
        except DnsTempError as e:
            err = str(e)
            continue
        seen += addrs
        if any(ipaddress.ip_address(a) == ipaddress.ip_address(ip) for a in addrs):
            confirmed = name
            break
    if confirmed:
        out.append(Result(f"rdns.fcrdns:{ip}", State.PASS, f"{confirmed} resolves back to {ip}"))
    elif err:
        out.append(Result(f"rdns.fcrdns:{ip}", State.TEMPERROR, f"forward lookup not checked: {err}"))
    else:
        out.append(
            Result(
                f"rdns.fcrdns:{ip}",
                State.FAIL,
                f"{ip} PTR {names[0]}, but {names[0]} resolves to {', '.join(seen) or 'nothing'}, not {ip}",
                f"add {names[0]}. {'AAAA' if ':' in ip else 'A'} {ip} (or point the PTR at a name that has it)",
            )
        )
    if helo:
        name = confirmed or names[0]
        if normal(helo) == name:
            out.append(Result(f"rdns.helo:{ip}", State.PASS, f"HELO name {normal(helo)} is {ip}'s PTR name"))
        else:
            out.append(
                Result(
                    f"rdns.helo:{ip}",
                    State.WARN,
                    f"HELO name {normal(helo)} is not {ip}'s PTR name {name}",
                    f"set smtp_helo_name = {name} in main.cf (or the PTR of {ip} to {normal(helo)})",
                )
            )
    return out


def dnsbl_name(ip: str, zone: str) -> str:
    """The RFC 5782 query name: reversed octets (nibbles for IPv6) under the list's zone."""
    rev = dns.reversename.from_address(ip).to_text(omit_final_dot=True)
    rev = rev.rsplit(".in-addr.arpa", 1)[0].rsplit(".ip6.arpa", 1)[0]
    return f"{rev}.{zone.strip('.')}"


def check_dnsbl(dns: Dns, ip: str, zone: str) -> Result:
    check, name = f"dnsbl:{zone}:{ip}", dnsbl_name(ip, zone)
    try:
        ans = dns.cached(name, "A")
    except DnsTempError as e:
        return Result(check, State.TEMPERROR, f"{zone} not asked about {ip}: {e}")
    codes = [ipaddress.ip_address(r.address) for r in ans.records]
    if not codes:
        return Result(check, State.PASS, f"{ip} is not listed on {zone}")
    errors = [c for c in codes if c in QUERY_ERRORS or c not in LOOPBACK]
    if errors and len(errors) == len(codes):
        return Result(
            check,
            State.TEMPERROR,
            f"{zone} refused the query for {ip} (answer {errors[0]}): a query error, not a listing",
            "query the list through a resolver it accepts (its own or a registered one, not a public resolver)",
        )
    listed = [str(c) for c in codes if c not in errors]
    reason = ""
    try:
        texts = [b"".join(r.strings).decode("utf-8", "replace")[:200] for r in dns.cached(name, "TXT").records]
        reason = f": {texts[0]}" if texts else ""
    except DnsTempError:
        pass
    return Result(
        check,
        State.FAIL,
        f"{ip} is listed on {zone} ({', '.join(listed)}){reason}",
        f"find and stop the cause (a compromised account, an open form), then request removal from {zone}",
    )
