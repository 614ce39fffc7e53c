"""The layer both sides share: generated protocol modules, the value codec and the error hierarchy.

The generated modules are loaded on first use (PEP 562): a worker process needs only the codec, and
importing grpc and the descriptors would add tens of milliseconds to every worker start.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from spear_sdk.wire._gen import function_pb2, function_pb2_grpc, object_pb2, object_pb2_grpc

__all__ = ["function_pb2", "function_pb2_grpc", "object_pb2", "object_pb2_grpc"]


def __getattr__(name: str) -> ModuleType:
    if name in __all__:
        module = importlib.import_module(f"spear_sdk.wire._gen.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
