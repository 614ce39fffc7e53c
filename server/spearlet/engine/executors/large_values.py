"""How a worker encodes what a function returns or yields: inline, or by reference when it is large.

A Python caller (``Job.exact_results``) reads references, so a value whose serialized size passes
``Job.inline_limit`` is written as an object file (:mod:`.object_cache`) and travels as a reference. Any
other caller reads only inline values: one larger than a message can carry fails ``RESULT_TOO_LARGE``, as
does an object over ``--max-object-bytes``. Either way the execution is never recorded completed with a
result nobody can receive.
"""

from __future__ import annotations

from spear_sdk.wire import blob, codec
from spearlet.engine.executors.base import RESULT_TOO_LARGE, Job
from spearlet.engine.executors.loading import Failure
from spearlet.engine.executors.object_cache import unreachable, write_result

_OPTION = "--max-object-bytes (SPEARLET_MAX_OBJECT_BYTES, or start_lab(max_object_bytes=...))"


def encode(job: Job, value: object) -> bytes:
    """The serialized ``Any`` to report for ``value``."""
    if job.exact_results and job.object_dir and job.inline_limit:
        encoded = blob.inline_or_blob(value, job.inline_limit)
        if isinstance(encoded, blob.Blob):
            if job.max_object_bytes and encoded.size > job.max_object_bytes:
                raise Failure(
                    RESULT_TOO_LARGE,
                    f"the result is {encoded.size} bytes, over the limit of {job.max_object_bytes} bytes "
                    f"for an object; raise it with {_OPTION}",
                )
            reason = unreachable(job.object_dir)
            if reason:
                raise Failure(
                    RESULT_TOO_LARGE,
                    f"the result is {encoded.size} bytes, past the inline limit of {job.inline_limit} bytes, "
                    f"so it travels by reference; but {reason}",
                )
            return write_result(job.object_dir, job.execution_id, encoded)
        return encoded.SerializeToString()
    data = codec.encode_bytes(value, exact=job.exact_results, allow_pickle=True)
    if job.max_inline_bytes and len(data) > job.max_inline_bytes:
        raise Failure(
            RESULT_TOO_LARGE,
            f"the result is {len(data)} bytes serialized, more than one message carries "
            f"({job.max_inline_bytes}); a Python caller receives large values by reference",
        )
    return data
