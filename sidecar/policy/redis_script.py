"""The GCRA Lua script the Redis backend runs, written for the configured rules.

The rules' windows (emission interval, capacity x interval) are fixed at start, so they are
written into the script as a Lua table instead of being sent with every decision: a decision
travels as one argument, two bytes per rule it touches (``3 * rule index + mode``), and the
keys of its windows. Relays with the same rules load the same script (the same SHA).

The stored state is one string per key and window, its theoretical arrival time in Redis's
clock, expiring when it has passed (``sidecar limits`` reads it). It is written with 17
significant digits, so that it reads back as the same number: Lua's ``tostring`` keeps 14,
which rounded a time up by as much as 50 us and made a decision exactly at the limit refuse
when the in-memory limiter admits it.
"""

from __future__ import annotations

from collections.abc import Sequence

from sidecar.policy.limits import CompiledRule

CHECK, CONSUME, FORCE = 0, 1, 2

# One call decides a batch: every decision the policy server read in one reactor turn, in
# order, atomically (a later decision on the same key sees what an earlier one counted).
# ARGV: one string per decision, two bytes per rule touched (3 * rule index + mode, big-endian);
# KEYS: one per window of each touched rule, in the same order.
# Returns only the refusals, three numbers each: the decision (1-based), the position of the
# refusing rule within that decision (1-based) and the index of its window (1-based).
# Rules are checked in order; the first refusal ends its decision (earlier rules keep their count).
BODY = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local out, k = {}, 0
local get, set, byte, fmt = 'GET', 'SET', string.byte, string.format
for d = 1, #ARGV do
  local plan = ARGV[d]
  local refused = false
  for e = 1, #plan, 2 do
    local hi, lo = byte(plan, e, e + 1)
    local code = hi * 256 + lo
    local mode = code % 3
    local wins = R[(code - mode) / 3 + 1]
    local nw = #wins
    if not refused then
      local first, more
      for w = 1, nw do
        local win = wins[w]
        local tat = tonumber(redis.call(get, KEYS[k + w]) or now)
        if tat < now then tat = now end
        local new = tat + win[1]
        if mode ~= 2 and new - now > win[2] + 1e-9 then
          refused = true
          out[#out + 1] = d
          out[#out + 1] = (e + 1) / 2
          out[#out + 1] = w
          break
        end
        if w == 1 then first = new else more = more or {}; more[w] = new end
      end
      if not refused and mode ~= 0 then
        for w = 1, nw do
          local new = first
          if w > 1 then new = more[w] end
          redis.call(set, KEYS[k + w], fmt('%.17g', new), 'PX', math.ceil((new - now) * 1000) + 1000)
        end
      end
    end
    k = k + nw
  end
end
return out
"""


def gcra_script(rules: Sequence[CompiledRule]) -> str:
    """The script for these rules: their windows as the table ``R``, then the GCRA loop."""
    table = ", ".join(
        "{" + ", ".join(f"{{{w.interval!r}, {(w.capacity * w.interval)!r}}}" for w in r.windows) + "}" for r in rules
    )
    return f"local R = {{{table}}}\n{BODY}"


def entry_code(rule_index: int, mode: int) -> bytes:
    """The two bytes naming one rule of a decision and what to do with it (CHECK, CONSUME, FORCE)."""
    code = 3 * rule_index + mode
    if code > 0xFFFF:
        raise ValueError("too many rate-limit rules for the Redis backend (at most 21,845)")
    return bytes((code >> 8, code & 0xFF))


def redis_key(key: str, window: int) -> str:
    """Windows of one key share a hash tag (``{key}``)."""
    return f"sidecar:rl:{{{key}}}#{window}"
