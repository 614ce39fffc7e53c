"""Values by reference on the server's side: what a job needs to know, and results that arrive as files.

A worker writes a result (or a streamed value) larger than the inline limit into the object directory's
incoming folder, under the key ``spear/results/{execution_id}/{token}``, and reports a reference to it.
Before the execution's end is recorded, :func:`adopt_outcome` makes that file an object owned by the
execution (reclaimed with its records, or a grace period after it was fetched); an object the server
cannot keep (over ``--max-object-bytes``) turns the outcome into ``RESULT_TOO_LARGE``. The server never
reads the value itself.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from spear_sdk.wire import blob, refs
from spear_sdk.wire.errors import SpearError

from ..blobs import file_name
from ..config import Config
from ..objects import EXECUTION, IMPLICIT, ObjectRepository, results_prefix
from .executors.base import FAILED, RESULT_TOO_LARGE, Outcome


def job_settings(config: Config, objects: ObjectRepository) -> dict[str, Any]:
    """The :class:`~.executors.base.Job` fields that say where and when values go by reference."""
    if objects.files is None:
        return {"max_inline_bytes": config.message_limit - (64 << 10)}
    return {
        "object_dir": str(objects.files.root),
        "inline_limit": config.inline_limit,
        "max_inline_bytes": config.message_limit - (64 << 10),
        "max_object_bytes": objects.max_object_bytes,
    }


def needs_adoption(outcome: Outcome) -> bool:
    return outcome.result is not None and outcome.result.startswith(refs.REF_PREFIX)


async def adopt_value(objects: ObjectRepository, data: bytes, execution_id: str) -> None:
    """Make the file a worker wrote for the reference ``data`` an object of ``execution_id``."""
    key = refs.ref_key_of_bytes(data)
    if key is None:
        return
    if not key.startswith(results_prefix(execution_id)) or objects.files is None:
        raise ValueError(f"a worker reported the object {key!r}, which is not one of this execution's")
    metadata = {"content-type": blob.CONTENT_TYPE, IMPLICIT: "result", EXECUTION: execution_id}
    source = objects.files.incoming / file_name(key)
    await objects.adopt(key, source, metadata, overwrite=False)


async def adopt_outcome(objects: ObjectRepository, outcome: Outcome, execution_id: str) -> Outcome:
    """``outcome``, its result by reference made an object; RESULT_TOO_LARGE when it cannot be kept."""
    if not needs_adoption(outcome):
        return outcome
    assert outcome.result is not None
    try:
        await adopt_value(objects, outcome.result, execution_id)
    except (SpearError, ValueError, OSError) as exc:
        message = exc.message if isinstance(exc, SpearError) else str(exc)
        return dataclasses.replace(
            outcome,
            status=FAILED,
            result=None,
            error_code=RESULT_TOO_LARGE,
            error_message=f"the result cannot be returned: {message}",
        )
    return outcome
