"""``sidecar check-domain``: one domain-health report, for people or (``--json``) for scripts."""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys

from sidecar.cli.output import EX_CONFIG, EX_OK, EX_TEMPFAIL, EX_USAGE
from sidecar.config import Config

EX_PROBLEMS = 1


def add_parser(sub: argparse._SubParsersAction) -> None:
    text = (
        "check a sending domain's DNS (MX, SPF, DKIM, DMARC, MTA-STS, TLS-RPT) and each relay IP's "
        "(PTR, forward-confirmed reverse DNS, HELO name, blocklists); exit 0 healthy, 1 warnings or "
        "failures, 75 when DNS could not answer. With --config, a [[domains]] entry and "
        "[domain_health] give the defaults."
    )
    p = sub.add_parser("check-domain", help="check a sending domain's DNS and relay IPs", description=text)
    p.add_argument("--config", "-c", metavar="FILE", help="TOML configuration file (for defaults)")
    p.add_argument("domain", metavar="DOMAIN")
    p.add_argument("--relay-ip", action="append", default=[], metavar="IP", help="a relay's public IP (repeatable)")
    p.add_argument("--helo", default="", metavar="NAME", help="the relay's HELO name (Postfix smtp_helo_name)")
    p.add_argument("--dkim-selector", action="append", default=[], metavar="SEL", help="DKIM selector (repeatable)")
    p.add_argument("--dkim-domain", default="", metavar="DOMAIN", help="signing domain d= (default: DOMAIN)")
    p.add_argument(
        "--envelope-domain", default="", metavar="DOMAIN", help="MAIL FROM (bounce) domain (default: DOMAIN)"
    )
    p.add_argument("--dnsbl", action="append", default=[], metavar="ZONE", help="DNS blocklist zone (repeatable)")
    p.add_argument(
        "--resolver",
        action="append",
        default=[],
        metavar="IP[:PORT]",
        help="DNS server to ask (repeatable; default: the system's)",
    )
    p.add_argument("--timeout", type=float, default=None, help="seconds for one DNS query (default 5)")
    p.add_argument("--json", action="store_true", help="the report as one JSON object")
    p.set_defaults(handler=cmd_check_domain)


def cmd_check_domain(args: argparse.Namespace, cfg: Config) -> int:
    from sidecar.domains.lookup import Dns, NoResolver, is_domain, nameserver, normal
    from sidecar.domains.report import Target, check_domain
    from sidecar.domains.results import State

    domain = normal(args.domain)
    if not is_domain(domain):
        return _usage(f"DOMAIN: {args.domain!r} is not a domain name")
    for opt, values in (("--dkim-domain", [args.dkim_domain]), ("--envelope-domain", [args.envelope_domain])):
        if values[0] and not is_domain(values[0]):
            return _usage(f"{opt}: {values[0]!r} is not a domain name")
    for ip in args.relay_ip:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            return _usage(f"--relay-ip: {ip!r} is not an IP address")
    for zone in args.dnsbl:
        if not is_domain(zone):
            return _usage(f"--dnsbl: {zone!r} is not a zone name")
    for r in args.resolver:
        try:
            nameserver(r)
        except ValueError as e:
            return _usage(f"--resolver: {e}")
    if args.timeout is not None and not 0 < args.timeout <= 60:
        return _usage("--timeout: expected seconds from 0 to 60")
    dh = cfg.domain_health
    known = next((d for d in cfg.domains if d.name == domain), None)
    target = Target(
        domain,
        relay_ips=tuple(args.relay_ip or dh.relay_ips),
        helo=args.helo or dh.helo,
        dkim_selectors=tuple(args.dkim_selector or (known.dkim_selectors if known else ())),
        envelope_domain=args.envelope_domain or (known.envelope_domain if known else ""),
        dkim_domain=args.dkim_domain or (known.dkim_domain if known else ""),
        dnsbl_zones=tuple(args.dnsbl or dh.dnsbl_zones),
    )
    try:
        dns = Dns(args.resolver or dh.resolvers, timeout=args.timeout or dh.timeout)
    except NoResolver as e:
        print(f"sidecar check-domain: --resolver: {e}", file=sys.stderr)
        return EX_CONFIG
    report = check_domain(dns, target)
    if args.json:
        print(json.dumps(report.to_dict()))
    else:
        print_report(report)
    state = report.state
    return {State.PASS: EX_OK, State.TEMPERROR: EX_TEMPFAIL}.get(state, EX_PROBLEMS)


def print_report(report: object) -> None:
    from sidecar.domains.results import Report

    assert isinstance(report, Report)
    score = "-" if report.score is None else f"{report.score}/100"
    print(f"{report.domain}: {report.state.value}, health score {score}")
    width = max((len(r.check) for r in report.results), default=0)
    for r in report.results:
        print(f"  {r.state.value.upper():9} {r.check.ljust(width)}  {r.detail}")
        if r.fix and r.state.value != "pass":
            print(f"  {'':9} {''.ljust(width)}  fix: {r.fix}")


def _usage(message: str) -> int:
    print(f"sidecar check-domain: {message}", file=sys.stderr)
    return EX_USAGE
