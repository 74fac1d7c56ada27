"""Rate-limit rules applied to policy requests; state is GCRA TATs kept in memory.

Keys look like ``RULE:VALUE`` (several key parts are joined with ``|``). Each window
of a rule has its own TAT. Counters are written to the database by the service every
``ratelimit.persist_interval`` and loaded at start, so they survive a restart.
"""

from __future__ import annotations

import functools
import ipaddress
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sidecar import ratelimit
from sidecar.config import RateLimitRule


def human_duration(seconds: float) -> str:
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= n and seconds % n == 0:
            return f"{int(seconds // n)}{unit}"
    return f"{seconds:g}s"


@functools.lru_cache(maxsize=65536)
def _network(address: str, v4: int, v6: int) -> str:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    plen = v4 if ip.version == 4 else v6
    if plen >= ip.max_prefixlen:
        return str(ip)
    return str(ipaddress.ip_network(f"{ip}/{plen}", strict=False))


@dataclass(frozen=True)
class CompiledRule:
    rule: RateLimitRule
    windows: tuple[ratelimit.Window, ...]
    exempt_values: frozenset[str]
    exempt_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    messages: bool

    @property
    def name(self) -> str:
        return self.rule.name

    def key_value(self, attrs: Mapping[str, str]) -> str | None:
        """The rule's key for this request, or None when a key part is missing or exempt."""
        parts = []
        for k in self.rule.key:
            if k == "sender_domain":
                v = attrs.get("sender", "").rpartition("@")[2].lower()
            elif k == "recipient_domain":
                v = attrs.get("recipient", "").rpartition("@")[2].lower()
            elif k == "client_address":
                v = attrs.get("client_address", "")
                if v and self.exempt_networks and self._exempt_ip(v):
                    return None
                v = _network(v, self.rule.ipv4_prefix, self.rule.ipv6_prefix) if v else ""
            else:
                v = attrs.get(k, "").lower()
            if not v or v in self.exempt_values:
                return None
            parts.append(v)
        return f"{self.rule.name}:{'|'.join(parts)}"

    def _exempt_ip(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in n for n in self.exempt_networks if n.version == ip.version)

    def reply(self, key: str, window: ratelimit.Window) -> str:
        return self.rule.reply.format(rule=self.rule.name, rate=window.rate, per=human_duration(window.per),
                                      key=key.partition(":")[2])


def compile_rule(rule: RateLimitRule) -> CompiledRule:
    values, nets = set(), []
    for e in rule.exempt:
        if "/" in e:
            nets.append(ipaddress.ip_network(e, strict=False))
        else:
            values.add(e.lower())
    return CompiledRule(rule, tuple(ratelimit.Window(w.rate, w.per, w.burst) for w in rule.limits),
                        frozenset(values), tuple(nets), rule.count == "messages")


class RateLimiter:
    """All rules, their in-memory state, and which keys changed since the last save."""

    def __init__(self, rules: Iterable[RateLimitRule], committed_instances: int = 10000) -> None:
        self.rules = [compile_rule(r) for r in rules]
        self.state: dict[str, list[float | None]] = {}
        self.dirty: set[str] = set()
        self._committed: OrderedDict[str, None] = OrderedDict()
        self._committed_max = committed_instances

    def __bool__(self) -> bool:
        return bool(self.rules)

    def _admit(self, rule: CompiledRule, key: str, now: float, consume: bool) -> str | None:
        tats = self.state.get(key)
        if tats is None:
            tats = [None] * len(rule.windows)
        verdicts = [ratelimit.check(w, tats[i], now, consume=False) for i, w in enumerate(rule.windows)]
        for i, v in enumerate(verdicts):
            if not v.allowed:
                return rule.reply(key, rule.windows[i])
        if consume:
            self.state[key] = [ratelimit.force(w, tats[i], now) for i, w in enumerate(rule.windows)]
            self.dirty.add(key)
        return None

    def check(self, attrs: Mapping[str, str], state: str, now: float) -> tuple[str, str, str] | None:
        """(rule name, key, reply) when the request is over a limit; consumes units as the state requires."""
        if state == "END-OF-MESSAGE":
            self._commit_message(attrs, now)
            return None
        for rule in self.rules:
            if rule.messages:
                if state not in ("RCPT", "DATA"):
                    continue
                consume = False
            else:
                if state != "RCPT":
                    continue
                consume = True
            key = rule.key_value(attrs)
            if key is None:
                continue
            reply = self._admit(rule, key, now, consume)
            if reply is not None:
                return rule.name, key, reply
        return None

    def first_commit(self, attrs: Mapping[str, str]) -> bool:
        """True the first time an END-OF-MESSAGE for this ``instance`` is seen."""
        instance = attrs.get("instance", "")
        if instance:
            if instance in self._committed:
                return False
            self._committed[instance] = None
            if len(self._committed) > self._committed_max:
                self._committed.popitem(last=False)
        return True

    def _commit_message(self, attrs: Mapping[str, str], now: float) -> None:
        if not self.first_commit(attrs):
            return
        for rule in self.rules:
            if not rule.messages:
                continue
            key = rule.key_value(attrs)
            if key is None:
                continue
            tats = self.state.get(key) or [None] * len(rule.windows)
            self.state[key] = [ratelimit.force(w, tats[i], now) for i, w in enumerate(rule.windows)]
            self.dirty.add(key)

    # -- persistence and inspection ----------------------------------------------------------
    def rule_for(self, key: str) -> CompiledRule | None:
        name = key.partition(":")[0]
        return next((r for r in self.rules if r.name == name), None)

    def take_dirty(self, now: float) -> dict[str, float | None]:
        """{db key: TAT or None (= delete)} for keys changed since the last call."""
        out: dict[str, float | None] = {}
        for key in self.dirty:
            for i, tat in enumerate(self.state.get(key) or ()):
                out[f"{key}#{i}"] = tat if tat is not None and tat > now else None
        self.dirty = set()
        return out

    def load(self, rows: Iterable[tuple[str, float]], now: float) -> int:
        n = 0
        for dbkey, tat in rows:
            key, _, idx = dbkey.rpartition("#")
            rule = self.rule_for(key)
            if rule is None or not idx.isdigit() or int(idx) >= len(rule.windows) or tat <= now:
                continue
            tats = self.state.setdefault(key, [None] * len(rule.windows))
            tats[int(idx)] = tat
            n += 1
        return n

    def reset(self, key: str) -> None:
        self.state.pop(key, None)
        self.dirty.discard(key)

    def prune(self, now: float) -> int:
        dead = [k for k, tats in self.state.items() if all(t is None or t <= now for t in tats)]
        for k in dead:
            del self.state[k]
        return len(dead)
