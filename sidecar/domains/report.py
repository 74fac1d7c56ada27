"""Run every check of one sending domain and its relays: one :class:`Report`."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from sidecar.domains.dkim import check_dkim
from sidecar.domains.dmarc import check_dmarc
from sidecar.domains.lookup import Dns, normal
from sidecar.domains.mail import check_mx, check_transport
from sidecar.domains.relay import check_dnsbl, check_rdns
from sidecar.domains.results import Report
from sidecar.domains.spf import check_spf


@dataclass(frozen=True)
class Target:
    """What to check: the From domain, our relays and how we sign and bounce for it."""

    domain: str
    relay_ips: tuple[str, ...] = ()
    helo: str = ""
    dkim_selectors: tuple[str, ...] = ()
    envelope_domain: str = ""  # the MAIL FROM (bounce/VERP) domain; default the domain itself
    dkim_domain: str = ""  # the signatures' d=; default the domain itself
    dnsbl_zones: tuple[str, ...] = field(default=())


def check_domain(dns: Dns, t: Target) -> Report:
    domain = normal(t.domain)
    envelope = normal(t.envelope_domain or domain)
    report = Report(domain, checked_at=time.time())
    r = report.results
    r.append(check_mx(dns, domain))
    r += check_spf(dns, envelope, list(t.relay_ips), t.helo)
    r += check_dkim(dns, normal(t.dkim_domain or domain), list(t.dkim_selectors))
    r += check_dmarc(dns, domain, envelope, normal(t.dkim_domain or domain))
    for ip in t.relay_ips:
        r += check_rdns(dns, ip, t.helo)
        r += [check_dnsbl(dns, ip, zone) for zone in t.dnsbl_zones]
    r += check_transport(dns, domain)
    return report
