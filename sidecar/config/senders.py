"""The configuration sections that watch the senders: reputation levels per tenant
(docs/reputation.md) and the DNS health of the sending domains (docs/domain-health.md)."""

from __future__ import annotations

from dataclasses import dataclass

from sidecar.config.fields import (
    dns_server,
    host_name,
    host_name_or_empty,
    ip_address,
    non_negative_int,
    opt,
    positive_duration,
    positive_int,
    probability,
)


@dataclass(frozen=True)
class ReputationConfig:
    enabled: bool = opt(
        True, doc="Count sends, bounces and complaints per tenant and apply the five levels (docs/reputation.md)."
    )
    window: float = opt(
        3 * 86400.0,
        parse=positive_duration,
        doc="Rates are measured over this much of the past (never before a release).",
    )
    retention: float = opt(
        7 * 86400.0, parse=positive_duration, doc="How long the hourly counts and queue ids are kept."
    )
    min_sends_bounces: int = opt(200, parse=positive_int, doc="Sends in the window before the bounce rate acts.")
    min_sends_complaints: int = opt(1000, parse=positive_int, doc="Sends in the window before the complaint rate acts.")
    warn_bounce: float = opt(0.02, parse=probability, doc="Bounce rate that enters level 2 (warn).")
    warn_complaint: float = opt(0.0008, parse=probability, doc="Complaint rate that enters level 2 (warn).")
    throttle_bounce: float = opt(0.04, parse=probability, doc="Bounce rate (Wilson lower bound) that enters level 3.")
    throttle_complaint: float = opt(
        0.001, parse=probability, doc="Complaint rate (Wilson lower bound) that enters level 3."
    )
    hold_bounce: float = opt(
        0.08, parse=probability, doc="Bounce rate (Wilson lower bound) that enters level 4 (hold)."
    )
    hold_complaint: float = opt(
        0.003, parse=probability, doc="Complaint rate (Wilson lower bound) that enters level 4."
    )
    pause_bounce: float = opt(
        0.10, parse=probability, doc="Bounce rate (Wilson lower bound) that enters level 5 (pause)."
    )
    pause_complaint: float = opt(
        0.005, parse=probability, doc="Complaint rate (Wilson lower bound) that enters level 5."
    )
    warn_leave_bounce: float = opt(
        0.015, parse=probability, doc="Level 2 is left after bounces stay under this for cooldown."
    )
    warn_leave_complaint: float = opt(0.0005, parse=probability, doc="... and complaints under this.")
    throttle_leave_bounce: float = opt(
        0.03, parse=probability, doc="Level 3 steps down after bounces stay under this for cooldown."
    )
    throttle_leave_complaint: float = opt(0.0008, parse=probability, doc="... and complaints under this.")
    cooldown: float = opt(
        6 * 3600.0,
        parse=positive_duration,
        doc="How long rates must stay under the leave thresholds to step down one level.",
    )
    bad_list_sends: int = opt(100, parse=positive_int, doc="A bad list: at least this many sends in one hour ...")
    bad_list_bounce: float = opt(
        0.15, parse=probability, doc="... with at least this share of hard bounces: level 4 at once."
    )
    throttle_factor: int = opt(
        4, parse=positive_int, doc="At level 3 each recipient uses this many units of the tenant's rate limits."
    )
    release_to: int = opt(3, parse=positive_int, doc="Level a release goes to when no --to is given (1-3).")
    evaluate_interval: float = opt(
        60.0, parse=positive_duration, doc="How often the levels are re-evaluated from the counts."
    )
    sync_interval: float = opt(
        5.0, parse=positive_duration, doc="How often counts are written and levels re-read from the database."
    )
    metrics_top: int = opt(
        0,
        parse=non_negative_int,
        doc="Also export rates for the N busiest tenants at level 1 (0: only tenants above normal).",
    )
    postfix_config_dir: str = opt(
        "", doc="Postfix configuration directory for postsuper/postqueue -c (empty: Postfix's default)."
    )
    postfix_bin_dir: str = opt("", doc="Directory of postsuper and postqueue (empty: found on PATH).")


@dataclass(frozen=True)
class DomainConfig:
    name: str = opt(parse=host_name, doc="A sending (From) domain whose DNS is checked (docs/domain-health.md).")
    dkim_selectors: tuple[str, ...] = opt((), doc="DKIM selectors its mail is signed with.")
    envelope_domain: str = opt(
        "",
        parse=host_name_or_empty,
        doc="MAIL FROM (bounce, VERP) domain of its mail, for SPF and DMARC alignment; empty = postfix.bounce_domain.",
    )
    dkim_domain: str = opt("", parse=host_name_or_empty, doc="d= of its DKIM signatures; empty = name.")


@dataclass(frozen=True)
class DomainHealthConfig:
    interval: float = opt(3600.0, parse=positive_duration, doc="How often every [[domains]] entry is checked.")
    relay_ips: tuple[str, ...] = opt(
        (),
        parse=ip_address,
        doc="Public IPs this relay sends from; empty = Postfix's smtp_bind_address and "
        "smtp_bind_address6 (postconf). Required with [[domains]] when neither is set.",
    )
    helo: str = opt(
        "", parse=host_name_or_empty, doc="HELO name this relay uses; empty = Postfix's smtp_helo_name (postconf)."
    )
    resolvers: tuple[str, ...] = opt(
        (), parse=dns_server, doc='DNS servers to ask ("IP" or "IP:PORT"); empty = the system\'s (/etc/resolv.conf).'
    )
    timeout: float = opt(5.0, parse=positive_duration, doc="Longest wait for one DNS query, retries included.")
    dnsbl_zones: tuple[str, ...] = opt(
        (), parse=host_name, doc='DNS blocklists to look each relay IP up in, e.g. "zen.spamhaus.org".'
    )
    threads: int = opt(2, parse=positive_int, doc="Threads that run the checks (never the policy server's).")
