"""The garbage collector's settings in a process the server owns (``spearlet serve``).

CPython's cycle collector runs a young collection every 700 net allocations of container objects, and now
and then a full one that walks every object the process holds. A server holds tens of thousands from its
start (modules, the generated protobuf classes, grpc), and a batch of calls keeps thousands more alive
while it runs, so full collections came often and cost tens of milliseconds each: about a fifth of the
server's CPU in ``f.map``. Two settings take that away:

- what start-up made is frozen (``gc.freeze``): it is alive for good, and no collection walks it again;
- young collections come every :data:`YOUNG_THRESHOLD` allocations. An execution's objects make no
  reference cycles (``tests/grpc/test_garbage.py`` checks it), so reference counting frees them, and a
  collection would find nearly nothing.

A lab runs inside the user's kernel, whose collector is the user's: it is left as it is there.
"""

from __future__ import annotations

import gc

#: Net allocations of container objects between young collections (CPython's default: 700).
YOUNG_THRESHOLD = 10_000


def settle_after_start() -> None:
    """Freeze what start-up made and space young collections out; call once the server has started."""
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, oldest)
