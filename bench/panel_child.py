"""P9 (docs/performance.md) in a fresh interpreter: the comm messages a live lab panel sends while a heavy
load runs.

``python -m bench.panel_child SECONDS`` replaces ``comm.create_comm`` (the hook ipykernel fills in a real
kernel, and through which ipywidgets opens every widget's comm) by a comm that records each message it
would publish, opens ``lab.panel()`` (its default refresh), then runs ``f.map`` batches for SECONDS
from a thread while the main thread runs an event loop, as a kernel does. It prints one JSON line: the
update messages (``comm_msg``) sent during the load, its duration and call rate, and the busiest
one-second window.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import comm
from comm.base_comm import BaseComm

SENT: list[tuple[float, str]] = []


class RecordingComm(BaseComm):
    def publish_msg(
        self,
        msg_type: str,
        data: Any = None,
        metadata: Any = None,
        buffers: Any = None,
        **keys: Any,
    ) -> None:
        SENT.append((time.monotonic(), msg_type))


def _record(*args: Any, **kwargs: Any) -> BaseComm:
    return RecordingComm(*args, **kwargs)


comm.create_comm = _record


BATCH = 500


def _load(seconds: float, fn: Any) -> int:
    """Map batches until ``seconds`` have passed; the calls made."""
    calls = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        fn.map(range(BATCH), progress=False)
        calls += BATCH
    return calls


async def main(seconds: float) -> dict[str, Any]:
    import spear_sdk

    lab = spear_sdk.start_lab()
    increment = lab.client.function(lambda x: x + 1, name="panel-load")
    increment(1)
    panel = lab.panel()
    await asyncio.sleep(1.0)
    start = time.monotonic()
    calls = await asyncio.to_thread(_load, seconds, increment)
    end = time.monotonic()
    await asyncio.sleep(0.5)
    during = [t for t, kind in SENT if kind == "comm_msg" and start <= t <= end]
    busiest = max((sum(1 for t in during if w <= t < w + 1.0) for w in during), default=0)
    del panel
    return {
        "available": True,
        "messages": len(during),
        "seconds": end - start,
        "calls": calls,
        "calls_per_s": calls / (end - start),
        "busiest_second": busiest,
        "comms_opened": sum(1 for _, kind in SENT if kind == "comm_open"),
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(float(sys.argv[1])))), flush=True)
