"""Fixtures every test directory may use: an in-process server (``harness``) and ``spearlet serve``
subprocesses (``served``)."""

from harness import anyio_backend, make_harness, shared
from served import launcher

__all__ = ["anyio_backend", "launcher", "make_harness", "shared"]
