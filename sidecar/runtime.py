"""Process-wide settings of the serving process, applied once it has started.

The cyclic GC walking start-up's objects: ``StateSync.load`` freezes what it loaded, but the
rest of start-up (the API, webhooks, reputation, the Redis client, the listeners) came after
it, and each full collection would walk it again while requests wait. Everything start-up built
lives as long as the process: it is frozen once more when the service has started.

A shorter GIL switch interval (``sys.setswitchinterval(0.0005)``, so that the reactor gets the
GIL back from a pool thread sooner) was tried and not kept: in alternating runs it measured no
better p99 and 0.92-0.97x the request rate (docs/benchmarks.md, "Issue 17: parse speed and the
policy tail").
"""

from __future__ import annotations

import gc


def settle_after_start() -> None:
    """Call once the service has started (state loaded, listeners bound), before serving."""
    gc.collect()  # only what is not frozen yet: start-up's garbage is not kept forever
    gc.freeze()
