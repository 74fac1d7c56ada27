"""Bounces, complaints and auto-replies sent to the bounce domain, in layers.

* :mod:`.parse`: raw bytes -> ParsedMessage (pure, bounded; no database, no configuration);
* :mod:`.derive` -> :mod:`.trust` -> :mod:`.record`: findings per recipient (pure), who may
  suppress (our own data), then one transaction of raw message, events and suppressions;
* edges: :mod:`.pipe` (the pipe(8) client, standard library only), :mod:`.handoff` (the
  service it hands messages to), :mod:`.mailbox` (``sidecar import``), :mod:`.replay`,
  :mod:`.verp` (signed return paths); :mod:`.envelope` is what pipe and service share.

Kept empty of imports: the pipe client imports this package once per bounce.
"""
