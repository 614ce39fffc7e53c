"""Loading a job's artifact into a callable, with a per-process cache of what was loaded.

A ``python`` artifact is ``package.module:attr`` imported in the worker; a ``pickle`` artifact is the
cloudpickle bytes the engine read from the object store (one function, or a dict of entry points).
"""

from __future__ import annotations

import importlib
import inspect
import pickle
import threading
import traceback
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from spearlet.engine.executors.base import ARTIFACT_LOAD_FAILED, Artifact

#: Loaded artifacts kept per process (LRU), keyed by ``Artifact.cache_key``.
CACHE_SIZE = 256


class Failure(Exception):
    """Ends a job with ``FAILED``; ``details`` goes to the logs. ``raised``: what the user's code raised."""

    def __init__(
        self, code: str, message: str, details: str = "", raised: BaseException | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details
        self.raised = raised


def describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def format_exception(exc: BaseException, skip_file: str = __file__) -> str:
    """The traceback without the leading frames of ``skip_file``, so that it starts at the user's code."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == skip_file:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


_Loaded = tuple[Callable[..., Any], "inspect.Signature | None", str]
_cache: OrderedDict[tuple[str, str, str], _Loaded] = OrderedDict()
_cache_lock = threading.Lock()


def load(artifact: Artifact) -> _Loaded:
    """(callable, its signature or None, a name for messages); cached under ``artifact.cache_key``."""
    key = (artifact.type, artifact.cache_key, artifact.function_name)
    if artifact.cache_key:
        with _cache_lock:
            hit = _cache.get(key)
            if hit is not None:
                _cache.move_to_end(key)
                return hit
    loaded = _load(artifact)
    if artifact.cache_key:
        with _cache_lock:
            _cache[key] = loaded
            while len(_cache) > CACHE_SIZE:
                _cache.popitem(last=False)
    return loaded


def _load(artifact: Artifact) -> _Loaded:
    if artifact.type == "python":
        fn, name = _load_python(artifact.location, artifact.function_name)
    elif artifact.type == "pickle":
        fn, name = _load_pickle(artifact.payload, artifact.function_name)
    else:
        raise Failure(ARTIFACT_LOAD_FAILED, f"artifact type {artifact.type!r} does not run in this executor")
    if not callable(fn):
        raise Failure(ARTIFACT_LOAD_FAILED, f"{name} is not callable (it is a {type(fn).__name__})")
    try:
        signature: inspect.Signature | None = inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins have none; the call itself will check
        signature = None
    return fn, signature, name


def _load_python(location: str, function_name: str) -> tuple[object, str]:
    module_name, _, attr = location.partition(":")
    attr = function_name or attr
    if not module_name or not attr:
        raise Failure(
            ARTIFACT_LOAD_FAILED, f"a python artifact's location is 'package.module:attr', not {location!r}"
        )
    try:
        obj: object = importlib.import_module(module_name)
    except BaseException as exc:
        # The module's own failure deserves its traceback; a missing module does not.
        details = "" if isinstance(exc, ModuleNotFoundError) else format_exception(exc)
        raise Failure(
            ARTIFACT_LOAD_FAILED, f"cannot import module {module_name!r}: {describe(exc)}", details
        ) from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise Failure(ARTIFACT_LOAD_FAILED, f"module {module_name!r} has no attribute {attr!r}") from None
    return obj, f"{module_name}:{attr}"


def _load_pickle(payload: bytes | None, function_name: str) -> tuple[object, str]:
    if payload is None:
        raise Failure(ARTIFACT_LOAD_FAILED, "the pickle artifact has no payload")
    try:
        obj = pickle.loads(payload)
    except BaseException as exc:
        raise Failure(
            ARTIFACT_LOAD_FAILED, f"cannot unpickle the function: {describe(exc)}", format_exception(exc)
        ) from None
    if isinstance(obj, dict):
        names = ", ".join(sorted(map(str, obj))) or "none"
        if function_name:
            if function_name not in obj:
                raise Failure(
                    ARTIFACT_LOAD_FAILED,
                    f"no function {function_name!r} in the pickled artifact (it has: {names})",
                )
            return obj[function_name], function_name
        if len(obj) != 1:
            raise Failure(
                ARTIFACT_LOAD_FAILED,
                f"the pickled artifact holds several functions ({names}); set function_name",
            )
        name, fn = next(iter(obj.items()))
        return fn, str(name)
    return obj, getattr(obj, "__qualname__", function_name or "the pickled function")
