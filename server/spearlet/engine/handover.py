"""What another server needs to run a call again after its first server died (key ``call:{id}``).

A record says which function ran and how (task, function, headers, timeout, retries), but not the call's
arguments or environment. On a shared store a call that may be retried (``max_retries`` > 0, not a
stream) has them stored beside its record, so that a survivor that finds it orphaned (:mod:`.leases`) can
run it again rather than end it INTERRUPTED. Arguments stay the serialized ``Any`` bytes they came as.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field

from ..store.records import compact_json

CALL = "call:"


def call_key(execution_id: str) -> str:
    return CALL + execution_id


@dataclass
class StoredCall:
    args: list[bytes]
    kwargs: dict[str, bytes]
    environment: dict[str, str] = field(default_factory=dict)

    def encode(self) -> bytes:
        raw = {
            "args": [base64.b64encode(a).decode() for a in self.args],
            "kwargs": {k: base64.b64encode(v).decode() for k, v in self.kwargs.items()},
            "environment": self.environment,
        }
        return compact_json(raw)

    @classmethod
    def decode(cls, data: bytes) -> StoredCall:
        raw = json.loads(data)
        return cls(
            args=[base64.b64decode(a) for a in raw["args"]],
            kwargs={k: base64.b64decode(v) for k, v in raw["kwargs"].items()},
            environment=raw["environment"],
        )
