"""The serving process's settings after start-up (sidecar/runtime.py)."""

from __future__ import annotations

import gc
import weakref

from sidecar.runtime import settle_after_start


class _Node:
    def __init__(self) -> None:
        self.other: object = None


def test_after_start_start_up_objects_are_frozen_and_its_garbage_collected() -> None:
    gc.unfreeze()
    kept = [_Node() for _ in range(1000)]  # what start-up built: lives on
    for n in kept:
        n.other = n  # tracked by the cyclic GC
    cycle = _Node()
    cycle.other = cycle  # start-up's garbage: collected, not frozen for ever
    gone = weakref.ref(cycle)
    del cycle
    try:
        settle_after_start()
        assert gc.get_freeze_count() >= len(kept)
        assert gone() is None
        assert not any(isinstance(o, _Node) for o in gc.get_objects())  # frozen: no collection walks them
    finally:
        gc.unfreeze()
