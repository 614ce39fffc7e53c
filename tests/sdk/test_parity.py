"""The sync and async surfaces are the same: every public method of ``Client``, ``Function`` and
``Execution`` (and the module's ``wait`` / ``as_completed``) has an async twin of the same name and
parameters, awaited where the sync one blocks, iterated with ``async for`` where the sync one is a
generator."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest

import spear_sdk.aio
import spear_sdk.client
from spear_sdk import AsyncClient, AsyncExecution, AsyncFunction, Client, Execution, Function

PAIRS = [(Client, AsyncClient), (Function, AsyncFunction), (Execution, AsyncExecution)]
#: The protocols each surface speaks in its own way.
PROTOCOLS = {"__call__": "__call__", "__enter__": "__aenter__", "__exit__": "__aexit__"}
#: Methods that do no I/O (they build a handle or a view), so neither twin blocks or awaits.
LOCAL = {"function", "options", "panel", "watch"}


def kind(owner: type | object, name: str) -> str:
    attr = inspect.getattr_static(owner, name)
    if isinstance(attr, property):
        return "property"
    if isinstance(attr, staticmethod | classmethod):
        attr = attr.__func__
    if inspect.iscoroutinefunction(attr):
        return "coroutine"
    if inspect.isasyncgenfunction(attr) or _returns(attr, "AsyncIterator", "AsyncGenerator"):
        return "async iterator"
    if inspect.isgeneratorfunction(attr) or _returns(attr, "Iterator", "Generator"):
        return "iterator"
    return "plain"


def _returns(function: Callable[..., Any], *types: str) -> bool:
    """Whether ``function`` is annotated to return one of ``types`` (e.g. a plain ``def`` handing out an
    async generator); the annotations are strings here (``from __future__ import annotations``)."""
    annotation = str(inspect.signature(function).return_annotation)
    return annotation.split("[", 1)[0] in types


#: sync kind -> the kinds its async twin may have.
TWINS = {
    "coroutine": set(),  # the sync surface awaits nothing
    "async iterator": set(),
    "plain": {"coroutine"},
    "iterator": {"async iterator"},
    "property": {"property", "coroutine"},  # ``Execution.status`` asks the server: ``await status()``
}


def public(cls: type) -> dict[str, str]:
    """Public names (and protocol methods, under their sync name) -> the name on ``cls``."""
    names = {n: n for n in dir(cls) if not n.startswith("_")}
    for sync, async_ in PROTOCOLS.items():
        for candidate in (sync, async_):
            if any(candidate in vars(base) for base in cls.__mro__[:-1]):  # not object's
                names[sync] = candidate
    return names


def parameters(function: Callable[..., Any]) -> list[tuple[str, object, object]]:
    signature = inspect.signature(function)
    return [(p.name, p.kind, p.default) for p in signature.parameters.values() if p.name != "self"]


def check_twins(sync_owner: type | object, async_owner: type | object, sync: str, async_: str) -> None:
    sync_kind, async_kind = kind(sync_owner, sync), kind(async_owner, async_)
    where = f"{getattr(sync_owner, '__name__', sync_owner)}.{sync}"
    if sync in LOCAL:
        assert (sync_kind, async_kind) == ("plain", "plain"), f"{where} does no I/O on either surface"
    else:
        assert async_kind in TWINS[sync_kind], f"{where} is {sync_kind}, its async twin {async_kind}"
    sync_attr, async_attr = getattr(sync_owner, sync), getattr(async_owner, async_)
    if callable(sync_attr) and callable(async_attr) and not isinstance(sync_attr, type):
        assert parameters(sync_attr) == parameters(async_attr), f"{where} takes other parameters"


@pytest.mark.parametrize(("sync_cls", "async_cls"), PAIRS, ids=[s.__name__ for s, _ in PAIRS])
def test_the_classes_have_the_same_methods(sync_cls: type, async_cls: type) -> None:
    sync_names, async_names = public(sync_cls), public(async_cls)
    assert sorted(sync_names) == sorted(async_names)
    for name in sync_names:
        check_twins(sync_cls, async_cls, sync_names[name], async_names[name])


def test_wait_and_as_completed_have_async_twins() -> None:
    for name in ("wait", "as_completed"):
        check_twins(spear_sdk.client, spear_sdk.aio, name, name)
    assert spear_sdk.wait is spear_sdk.client.wait and spear_sdk.as_completed is spear_sdk.client.as_completed


def test_the_check_can_fail() -> None:
    """A twin that blocks where it should await, or takes other parameters, is caught."""

    class Sync:
        def result(self, timeout: float | None = None) -> int:
            return 0

    class Blocking:
        def result(self, timeout: float | None = None) -> int:
            return 0

    class Renamed:
        async def result(self, wait: float | None = None) -> int:
            return 0

    with pytest.raises(AssertionError, match="is plain, its async twin plain"):
        check_twins(Sync, Blocking, "result", "result")
    with pytest.raises(AssertionError, match="other parameters"):
        check_twins(Sync, Renamed, "result", "result")
