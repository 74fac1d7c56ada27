"""Rate-limit rules applied to policy requests; state is GCRA TATs kept in memory.

Keys look like ``RULE:VALUE`` (several key parts are joined with ``|``). Each window
of a rule has its own TAT. Counters are written to the database by the service every
``ratelimit.persist_interval`` and loaded at start, so they survive a restart.
"""

from __future__ import annotations

import functools
import ipaddress
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
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


_DERIVED_KEYS = ("sender_domain", "recipient_domain", "client_address")


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

    prefix: str = ""  # "RULE:"
    plain: str | None = None  # the attribute, when the key is that one attribute as is (lower-cased)

    def key_value(self, attrs: Mapping[str, str]) -> str | None:
        """The rule's key for this request, or None when a key part is missing or exempt."""
        plain = self.plain
        if plain is not None:
            v = attrs.get(plain, "").lower()
            if not v or v in self.exempt_values:
                return None
            return self.prefix + v
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
        return self.rule.reply.format(
            rule=self.rule.name, rate=window.rate, per=human_duration(window.per), key=key.partition(":")[2]
        )


def compile_rule(rule: RateLimitRule) -> CompiledRule:
    values, nets = set(), []
    for e in rule.exempt:
        if "/" in e:
            nets.append(ipaddress.ip_network(e, strict=False))
        else:
            values.add(e.lower())
    plain = rule.key[0] if len(rule.key) == 1 and rule.key[0] not in _DERIVED_KEYS else None
    return CompiledRule(
        rule,
        tuple(ratelimit.Window(w.rate, w.per, w.burst) for w in rule.limits),
        frozenset(values),
        tuple(nets),
        rule.count == "messages",
        f"{rule.name}:",
        plain,
    )


class RateLimiter:
    """All rules, their in-memory state, and which keys changed since the last save.

    Every window's step is ``ratelimit.step``/``ratelimit.force``: the one GCRA in Python, which
    ``ratelimit.check`` (the figures for the API and CLI) uses too. ``state`` values are
    replaced, never changed in place, so the database thread may read them (``dirty_items``)
    while the reactor goes on deciding.
    """

    def __init__(self, rules: Iterable[RateLimitRule], committed_instances: int = 10000) -> None:
        self.rules = [compile_rule(r) for r in rules]
        # key -> TAT per window; tuples of floats, which the cyclic GC stops tracking
        self.state: dict[str, tuple[float | None, ...]] = {}
        self.dirty: set[str] = set()
        self._committed: OrderedDict[str, None] = OrderedDict()
        self._committed_max = committed_instances
        # (rule, (interval, capacity * interval) per window, consume) for the states that check:
        # RCPT consumes per-recipient rules' units, DATA only checks per-message rules
        plan = [
            (r, tuple((w.interval, w.capacity * w.interval) for w in r.windows), not r.messages) for r in self.rules
        ]
        self._plans = {"RCPT": plan, "DATA": [p for p in plan if p[0].messages]}

    def __bool__(self) -> bool:
        return bool(self.rules)

    def _admit(
        self, rule: CompiledRule, params: tuple[tuple[float, float], ...], key: str, now: float, consume: bool
    ) -> str | None:
        """The reply when a window of ``rule`` refuses ``key`` at ``now``, else None (units consumed if ``consume``).

        ``params``: (interval, capacity * interval) of each window, for ``ratelimit.step``.
        """
        tats = self.state.get(key)
        if len(params) == 1:  # the usual rule: one window
            interval, limit = params[0]
            new = ratelimit.step(tats[0] if tats is not None else None, now, interval, limit)
            if new is None:
                return rule.reply(key, rule.windows[0])
            if consume:
                self.state[key] = (new,)
                self.dirty.add(key)
            return None
        news = []
        for i, (interval, limit) in enumerate(params):
            new = ratelimit.step(tats[i] if tats is not None else None, now, interval, limit)
            if new is None:
                return rule.reply(key, rule.windows[i])
            news.append(new)
        if consume:
            self.state[key] = tuple(news)
            self.dirty.add(key)
        return None

    def check(self, attrs: Mapping[str, str], state: str, now: float) -> tuple[str, str, str] | None:
        """(rule name, key, reply) when the request is over a limit; consumes units as the state requires."""
        plan = self._plans.get(state)
        if plan is None:
            if state == "END-OF-MESSAGE":
                self._commit_message(attrs, now)
            return None
        for rule, params, consume in plan:
            plain = rule.plain
            if plain is not None:  # key_value's one-attribute case, inlined
                v = attrs.get(plain, "").lower()
                if not v or v in rule.exempt_values:
                    continue
                key = rule.prefix + v
            else:
                maybe = rule.key_value(attrs)
                if maybe is None:
                    continue
                key = maybe
            reply = self._admit(rule, params, key, now, consume)
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
            tats = self.state.get(key) or (None,) * len(rule.windows)
            self.state[key] = tuple(ratelimit.force(w, tats[i], now) for i, w in enumerate(rule.windows))
            self.dirty.add(key)

    # -- persistence and inspection ----------------------------------------------------------
    def rule_for(self, key: str) -> CompiledRule | None:
        name = key.partition(":")[0]
        return next((r for r in self.rules if r.name == name), None)

    def take_dirty(self, now: float) -> dict[str, float | None]:
        """{db key: TAT or None (= delete)} for keys changed since the last call."""
        return self.dirty_items(self.take_dirty_keys(), now)

    def take_dirty_keys(self) -> set[str]:
        """The keys changed since the last call (O(1): the set is swapped for a new one)."""
        keys, self.dirty = self.dirty, set()
        return keys

    def dirty_items(self, keys: Iterable[str], now: float) -> dict[str, float | None]:
        """{db key: TAT or None (= delete)} for ``keys``; safe to run in the database thread."""
        out: dict[str, float | None] = {}
        get = self.state.get
        for key in keys:
            tats = get(key)
            if tats is None:
                continue
            if len(tats) == 1:
                tat = tats[0]
                out[key + "#0"] = tat if tat is not None and tat > now else None
                continue
            for i, tat in enumerate(tats):
                out[f"{key}#{i}"] = tat if tat is not None and tat > now else None
        return out

    def mark_dirty(self, keys: Iterable[str]) -> None:
        """Put keys back (their save failed): they are saved again next time."""
        self.dirty.update(keys)

    def load(self, rows: Iterable[tuple[str, float]], now: float) -> int:
        n = 0
        for dbkey, tat in rows:
            key, _, idx = dbkey.rpartition("#")
            rule = self.rule_for(key)
            if rule is None or not idx.isdigit() or int(idx) >= len(rule.windows) or tat <= now:
                continue
            tats = list(self.state.get(key) or (None,) * len(rule.windows))
            tats[int(idx)] = tat
            self.state[key] = tuple(tats)
            n += 1
        return n

    def reset(self, key: str) -> None:
        self.state.pop(key, None)
        self.dirty.discard(key)

    def prune(self, now: float) -> int:
        return sum(self.prune_steps(now))

    def prune_steps(self, now: float, step: int = 5000) -> Iterator[int]:
        """Drop keys whose every TAT has passed, ``step`` keys at a time: yields how many each slice dropped.

        The caller runs one slice per reactor turn, so a large table never holds up requests.
        """
        keys = list(self.state)
        state = self.state
        for i in range(0, len(keys), step):
            n = 0
            for k in keys[i : i + step]:
                tats = state.get(k)
                if tats is None:
                    continue
                for t in tats:
                    if t is not None and t > now:
                        break
                else:
                    del state[k]
                    n += 1
            yield n
