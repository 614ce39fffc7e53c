"""Notebook reprs: ``text/plain`` is the object's stable ``repr`` (no ids, times or ports, so nbval can
compare it); ``text/html`` is rendered from a template in ``templates/`` and may show everything."""

from __future__ import annotations

import html
from collections.abc import Iterable
from functools import cache
from importlib import resources
from string import Template


class Safe(str):
    """HTML that is already escaped."""


def _escape(value: object) -> str:
    return value if isinstance(value, Safe) else html.escape(str(value))


@cache
def _template(name: str) -> Template:
    return Template((resources.files(__package__) / "templates" / name).read_text(encoding="utf-8"))


def render(template: str, **fields: object) -> str:
    return _template(template).substitute({key: _escape(value) for key, value in fields.items()})


def bundle(obj: object, template: str, **fields: object) -> dict[str, str]:
    return {"text/plain": repr(obj), "text/html": render(template, **fields)}


def rows(items: Iterable[tuple[object, object]]) -> Safe:
    """Two-column table rows."""
    return Safe("".join(f"<tr><td>{_escape(k)}</td><td>{_escape(v)}</td></tr>" for k, v in items))


def size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
