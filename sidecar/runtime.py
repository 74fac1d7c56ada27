"""Process-wide settings of the serving process that keep the policy replies' tail short.

Two pauses stall every connection at once (docs/benchmarks.md, "Issue 17: parse speed and the
policy tail"):

* The GIL hand-over. A database job in the thread pool (the change feed every 0.5 s, counters
  every second, reputation every 5 s) holds the GIL while it runs Python; when the reactor
  wants it back, CPython asks the holder to let go only after the switch interval, 5 ms by
  default: every reply of that reactor turn may wait that long. At 0.5 ms the reactor waits
  about that; the interval only matters while two threads want the GIL, so an idle pool costs
  nothing.
* The cyclic GC walking start-up's objects. ``StateSync.load`` freezes what it loaded, but the
  rest of start-up (the API, webhooks, reputation, the Redis client, the listeners) came after
  it, and each full collection walks it again while requests wait. Everything start-up built
  lives as long as the process: it is frozen once more when the service has started.
"""

from __future__ import annotations

import gc
import sys

SWITCH_INTERVAL = 0.0005  # seconds a thread may keep the GIL while another waits (CPython: 0.005)


def settle_after_start() -> None:
    """Call once the service has started (state loaded, listeners bound), before serving."""
    sys.setswitchinterval(SWITCH_INTERVAL)
    gc.collect()  # only what is not frozen yet: start-up's garbage is not kept forever
    gc.freeze()
