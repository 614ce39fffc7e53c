"""Which notebook cell launched an invocation: its IPython execution count, kept in the execution's
metadata."""

from __future__ import annotations

import sys

CELL_KEY = "spear.cell"


def current_cell() -> int | None:
    """The execution count of the running IPython cell, or ``None`` outside IPython."""
    ipython = sys.modules.get("IPython")  # never import IPython just to find out it is not in use
    if ipython is None:
        return None
    shell = ipython.get_ipython()
    # The display hook knows the number the running cell shows as In[n]: IPython 9 counts the next
    # cell in ``execution_count`` while one runs, earlier versions count the running one.
    count = getattr(getattr(shell, "displayhook", None), "prompt_count", None)
    return count if isinstance(count, int) else None
