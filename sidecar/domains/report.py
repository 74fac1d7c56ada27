"""Run every check of one sending domain and its relays: one :class:`Report`."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sidecar.domains.dkim import check_dkim
from sidecar.domains.dmarc import check_dmarc
from sidecar.domains.lookup import Dns, normal
from sidecar.domains.mail import check_mx, check_transport
from sidecar.domains.relay import check_dnsbl, check_rdns
from sidecar.domains.results import Report, Result, State
from sidecar.domains.spf import check_spf
from sidecar.errors import one_line

log = logging.getLogger("sidecar.domains")


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
    signer = normal(t.dkim_domain or domain)
    report = Report(domain, checked_at=time.time())
    r = report.results
    r += _guarded("mx", check_mx, dns, domain)
    r += _guarded("spf.record", check_spf, dns, envelope, list(t.relay_ips), t.helo)
    r += _guarded("dkim", check_dkim, dns, signer, list(t.dkim_selectors))
    r += _guarded("dmarc.record", check_dmarc, dns, domain, envelope, signer)
    for ip in t.relay_ips:
        r += _guarded(f"rdns.ptr:{ip}", check_rdns, dns, ip, t.helo)
        for zone in t.dnsbl_zones:
            r += _guarded(f"dnsbl:{zone}:{ip}", check_dnsbl, dns, ip, zone)
    r += _guarded("transport.mta-sts", check_transport, dns, domain)
    return report


def _guarded(check: str, f: Callable[..., Any], *args: Any) -> list[Result]:
    """A check's results; a check that breaks (data no check foresaw) is a temporary error, logged."""
    try:
        out = f(*args)
    except Exception as e:
        log.exception("domain check %s failed", check)
        return [Result(check, State.TEMPERROR, f"not checked: {one_line(e, with_type=True)}")]
    return out if isinstance(out, list) else [out]
