"""A memory limit for one call inside a worker process (``Job.memory_limit_mb``).

The limit is ``RLIMIT_AS``, the only one Linux enforces at allocation time, so a function that asks for too
much gets a ``MemoryError`` instead of the machine's OOM killer. It counts address space, not resident
memory, and a spawned worker already maps a good deal (the interpreter, its libraries, thread stacks,
malloc arenas), so an absolute figure would say more about the worker than about the function. The limit
is therefore what the call may *add*: for the duration of the call the soft limit is the worker's current
size plus the limit, and afterwards the previous soft limit is put back (the hard limit is never lowered,
which is what makes putting it back possible). Warm workers can thus be shared by limited and unlimited
tasks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

MIB = 1 << 20


def address_space_bytes() -> int:
    """This process's address-space size (Linux ``VmSize``); 0 where it cannot be read."""
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmSize:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


@contextlib.contextmanager
def memory_limit(megabytes: int) -> Iterator[None]:
    """Let the code in the block add at most ``megabytes`` MiB of address space (0: no limit)."""
    if megabytes <= 0:
        yield
        return
    import resource  # POSIX only, and only limited calls need it

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = address_space_bytes() + megabytes * MIB
    for bound in (soft, hard):
        if bound != resource.RLIM_INFINITY:
            cap = min(cap, bound)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


__all__ = ["address_space_bytes", "memory_limit"]
