"""DNS lookups for the domain checks: a dnspython resolver with bounds, answers as plain values.

Answers are outsiders' data: each query has a deadline, at most ``MAX_RECORDS`` records of an
answer are looked at, and a TXT string is decoded with replacement. NXDOMAIN and NODATA are
answers (empty); a timeout, SERVFAIL, REFUSED or no server answering is :class:`DnsTempError`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
import dns.reversename

from sidecar.config.fields import nameserver

MAX_RECORDS = 50
MAX_TXT = 4096  # characters of one TXT record looked at (an SPF record over 450 bytes is trouble already)
MAX_CACHE = 10_000
NEGATIVE_TTL = 300.0


class NoResolver(ValueError):
    """Neither resolvers given nor a usable /etc/resolv.conf."""


class DnsTempError(Exception):
    """The DNS could not answer (timeout, SERVFAIL, REFUSED, no server): try again later."""


@dataclass(frozen=True)
class Answer:
    records: tuple[Any, ...]  # dnspython rdata; empty for NXDOMAIN and NODATA
    ttl: float
    nxdomain: bool = False


class Dns:
    """Lookups through explicit nameservers (``["127.0.0.1:5353"]``), or the system's when none.

    ``cached`` keeps answers (positive and negative) for their TTL: used for DNS blocklists,
    which ask that each address be queried no more often than that.
    """

    def __init__(
        self,
        nameservers: Sequence[str] = (),
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if nameservers:
            r = dns.resolver.Resolver(configure=False)
            r.nameservers = [dns.nameserver.Do53Nameserver(*nameserver(n)) for n in nameservers]
        else:
            try:
                r = dns.resolver.Resolver()  # the system's resolvers (/etc/resolv.conf)
            except dns.exception.DNSException as e:
                raise NoResolver(f"no DNS resolver configured ({e}): name one (IP or IP:PORT)") from None
        r.timeout = min(timeout, 2.0)  # per server try
        r.lifetime = timeout  # per query, every retry included
        r.cache = None
        r.use_edns(0, 0, 1232)
        self.resolver = r
        self.timeout = timeout
        self.clock = clock
        self._cache: dict[tuple[str, str], tuple[float, Answer]] = {}
        self._lock = threading.Lock()
        self.stopping = False  # set when the service stops: checks still running end at their next query

    def query(self, name: str, rdtype: str) -> Answer:
        if self.stopping:
            raise DnsTempError(f"{name} {rdtype}: not asked, the service is stopping")
        try:
            ans = self.resolver.resolve(name, rdtype, search=False, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            return Answer((), NEGATIVE_TTL, nxdomain=True)
        except dns.exception.Timeout:
            raise DnsTempError(f"{name} {rdtype}: no answer within {self.timeout:g} s") from None
        except dns.resolver.NoNameservers:
            raise DnsTempError(f"{name} {rdtype}: the server failed (SERVFAIL or REFUSED)") from None
        except dns.exception.DNSException as e:
            raise DnsTempError(f"{name} {rdtype}: {e}") from None
        if ans.rrset is None:
            return Answer((), NEGATIVE_TTL)
        return Answer(tuple(list(ans.rrset)[:MAX_RECORDS]), float(ans.rrset.ttl))

    def cached(self, name: str, rdtype: str) -> Answer:
        key, now = (name.lower(), rdtype), self.clock()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and hit[0] > now:
                return hit[1]
        ans = self.query(name, rdtype)
        with self._lock:
            if len(self._cache) >= MAX_CACHE:
                self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
                if len(self._cache) >= MAX_CACHE:
                    self._cache.clear()
            self._cache[key] = (now + min(ans.ttl, 86400.0), ans)
        return ans

    def txt(self, name: str) -> list[str]:
        """TXT records of ``name``, each with its strings joined."""
        return [txt_text(r)[:MAX_TXT] for r in self.query(name, "TXT").records]

    def addresses(self, name: str, rdtypes: tuple[str, ...] = ("A", "AAAA")) -> list[str]:
        """A and AAAA records of ``name`` (or only ``rdtypes``)."""
        return [r.address for t in rdtypes for r in self.query(name, t).records]

    def ptr(self, ip: str) -> list[str]:
        rev = dns.reversename.from_address(ip).to_text()
        return [normal(r.target.to_text()) for r in self.query(rev, "PTR").records]


def txt_text(rdata: Any) -> str:
    return b"".join(rdata.strings).decode("utf-8", "replace")


def normal(name: str) -> str:
    """A host name for comparison: lower case, no trailing dot."""
    return name.strip().rstrip(".").lower()


def is_domain(text: str) -> bool:
    try:
        dns.name.from_text(text)
    except dns.exception.DNSException:
        return False
    return bool(text) and "." in text.strip(".") and not any(c.isspace() for c in text)
