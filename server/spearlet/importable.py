"""Whether the server can import the module of a ``python`` artifact (``"package.module:function"``),
checked at registration when the client asks (``RegisterTaskRequest.check_import``).

``importlib.util.find_spec`` finds the module without running it (its parent packages are imported);
workers start with the server's ``sys.path`` and working directory, so what is found here is found there.
"""

from __future__ import annotations

import importlib.util

from spear_sdk.wire.errors import FailedPrecondition


def check_module(location: str) -> None:
    module = location.partition(":")[0]
    try:
        found = importlib.util.find_spec(module) is not None
        why = f"no module named {module!r}"
    except (ImportError, ValueError) as exc:
        found, why = False, f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # a parent package that fails to import raises whatever it raises
        found, why = False, f"importing its package raised {type(exc).__name__}: {exc}"
    if not found:
        raise FailedPrecondition(
            f"the server cannot import module {module!r} ({why}); install it where the server runs, "
            "or fix the name"
        )
