"""Checks of the domain's own mail records: MX (RFC 5321, null MX RFC 7505), MTA-STS (RFC 8461)
and TLS reporting (RFC 8460)."""

from __future__ import annotations

from sidecar.domains.dkim import tags
from sidecar.domains.lookup import Dns, DnsTempError, normal, txt_text
from sidecar.domains.results import Result, State


def check_mx(dns: Dns, domain: str) -> Result:
    try:
        ans = dns.query(domain, "MX")
    except DnsTempError as e:
        return Result("mx", State.TEMPERROR, f"MX of {domain} not checked: {e}")
    if ans.nxdomain:
        return Result("mx", State.FAIL, f"{domain} does not exist (NXDOMAIN)", f"create the zone {domain} with an MX")
    mx = sorted((r.preference, normal(r.exchange.to_text())) for r in ans.records)
    if not mx:
        return Result(
            "mx",
            State.FAIL,
            f"{domain} has no MX: replies and bounces to it cannot be delivered, and receivers distrust it",
            f"publish {domain}. MX 10 your-inbound-host.{domain}. (or a null MX: {domain}. MX 0 .)",
        )
    if mx == [(0, "")]:
        return Result("mx", State.PASS, f"{domain} has a null MX: it receives no mail (RFC 7505)")
    resolving, err = [], ""
    for _pref, host in mx[:10]:
        try:
            if dns.addresses(host):
                resolving.append(host)
        except DnsTempError as e:
            err = str(e)
    names = ", ".join(h for _, h in mx)
    if len(resolving) == len(mx[:10]):
        return Result("mx", State.PASS, f"MX {names}: every host resolves")
    if err and not resolving:
        return Result("mx", State.TEMPERROR, f"MX hosts of {domain} not resolved: {err}")
    bad = ", ".join(h for _, h in mx[:10] if h not in resolving)
    return Result(
        "mx",
        State.WARN if resolving else State.FAIL,
        f"MX {names}: {bad} has no address",
        f"give {bad} an A or AAAA record, or remove it from the MX records",
    )


def check_transport(dns: Dns, domain: str) -> list[Result]:
    return [
        _policy_record(dns, "transport.mta-sts", domain, f"_mta-sts.{domain}", "v=STSv1", "id", _STS_FIX),
        _policy_record(dns, "transport.tls-rpt", domain, f"_smtp._tls.{domain}", "v=TLSRPTv1", "rua", _TLSRPT_FIX),
    ]


_STS_FIX = (
    'publish {name}. TXT "v=STSv1; id=20260101" and the policy at https://mta-sts.{domain}/.well-known/mta-sts.txt'
)
_TLSRPT_FIX = 'publish {name}. TXT "v=TLSRPTv1; rua=mailto:tls-reports@{domain}"'


def _policy_record(dns: Dns, check: str, domain: str, name: str, version: str, tag: str, fix: str) -> Result:
    try:
        records = [t for t in (txt_text(r) for r in dns.query(name, "TXT").records) if t.startswith(version)]
    except DnsTempError as e:
        return Result(check, State.TEMPERROR, f"{name} not checked: {e}")
    if not records:
        return Result(check, State.WARN, f"no {version} record at {name}", fix.format(name=name, domain=domain))
    if len(records) > 1:
        return Result(check, State.FAIL, f"{len(records)} {version} records at {name}", "publish exactly one")
    if not tags(records[0]).get(tag):
        return Result(check, State.FAIL, f"{name}: {records[0]!r} has no {tag}=", fix.format(name=name, domain=domain))
    return Result(check, State.PASS, f"{name}: {records[0]}")
