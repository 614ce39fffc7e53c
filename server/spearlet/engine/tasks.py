"""Task registration and lookup over the store (keys ``task:{id}`` and ``task-name:{name}``)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import asdict, dataclass, replace

from spear_sdk.wire.errors import InvalidArgument, NotFound
from spear_sdk.wire.names import MAX_TASK_NAME, task_name_too_long

from ..store import KvStore
from ..store.records import TASK_NAME, StoredArtifact, StoredTask, task_key, task_name_key
from .ids import new_id

ARTIFACT_TYPES = ("python", "pickle", "process")
OBJECT_SCHEME = "object://"
_CHECKSUM = re.compile(r"^sha256:[0-9a-f]{64}$")
MAX_NAME = MAX_TASK_NAME
#: ``artifact_spec.metadata`` key: MiB of address space a call may add to its worker (see RELIABILITY.md).
MEMORY_LIMIT_MB = "memory_limit_mb"
#: Artifact types that run in a worker, where the limit applies.
_LIMITABLE = ("python", "pickle")
_MAX_MEMORY_LIMIT_MB = 1 << 30  # 1 PiB: beyond any machine, well within RLIMIT_AS


def memory_limit_mb(artifact: StoredArtifact) -> int:
    """The artifact's memory limit in MiB (0: none). Raises ``InvalidArgument`` unless it is valid."""
    raw = artifact.metadata.get(MEMORY_LIMIT_MB)
    if raw is None:
        return 0
    if artifact.artifact_type not in _LIMITABLE:
        raise InvalidArgument(
            f'artifact_spec.metadata["{MEMORY_LIMIT_MB}"] applies to python and pickle artifacts, '
            f"which run in a worker process; not to {artifact.artifact_type!r}"
        )
    limit = int(raw) if raw.isascii() and raw.isdigit() else 0
    if not 0 < limit <= _MAX_MEMORY_LIMIT_MB:
        raise InvalidArgument(
            f'artifact_spec.metadata["{MEMORY_LIMIT_MB}"] must be a whole number of MiB from 1 to '
            f"{_MAX_MEMORY_LIMIT_MB}, not {raw!r}"
        )
    return limit


def validate_artifact(artifact: StoredArtifact) -> None:
    """Raise ``InvalidArgument`` unless the artifact could be run (``python``, ``pickle`` or ``process``)."""
    kind = artifact.artifact_type
    if kind not in ARTIFACT_TYPES:
        raise InvalidArgument(f"unknown artifact_type {kind!r}; expected one of {', '.join(ARTIFACT_TYPES)}")
    if not artifact.location:
        raise InvalidArgument("artifact_spec.location is required")
    if kind == "python" and ":" not in artifact.location:
        raise InvalidArgument(
            f"a python artifact's location is 'package.module:attr', not {artifact.location!r}"
        )
    if kind == "pickle" and not (artifact.location.startswith(OBJECT_SCHEME) and artifact.location[9:]):
        raise InvalidArgument(f"a pickle artifact's location is 'object://<key>', not {artifact.location!r}")
    if artifact.checksum and not _CHECKSUM.match(artifact.checksum):
        raise InvalidArgument("artifact_spec.checksum must be 'sha256:<64 lowercase hex digits>'")
    if kind == "process" and "args" in artifact.metadata:
        try:
            args = json.loads(artifact.metadata["args"])
        except ValueError:
            args = None
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise InvalidArgument('artifact_spec.metadata["args"] must be a JSON list of strings')
    memory_limit_mb(artifact)


def validate_name(name: str) -> None:
    if not name:
        raise InvalidArgument("task_name is required")
    if (too_long := task_name_too_long(name)) is not None:
        raise InvalidArgument(too_long)


@dataclass(frozen=True)
class Registration:
    task: StoredTask
    created: bool
    updated: bool


class TaskRegistry:
    """Tasks by id and name. Decoded tasks are kept in memory (every invocation looks its task up); on a
    shared store another server's change drops the copy (:meth:`forget`, on its notice). The objects
    handed out are shared and must not be mutated.
    """

    def __init__(self, store: KvStore) -> None:
        self._store = store
        # Registration reads then writes; one at a time keeps task names unique.
        self._lock = asyncio.Lock()
        self._cache: dict[str, StoredTask] = {}

    async def get(self, task_id: str) -> StoredTask | None:
        if (task := self._cache.get(task_id)) is not None:
            return task
        data = await self._store.get(task_key(task_id))
        if data is None:
            return None
        task = self._cache[task_id] = StoredTask.decode(data)
        return task

    async def require(self, task_id: str) -> StoredTask:
        task = await self.get(task_id)
        if task is None:
            raise NotFound(f"task {task_id!r} not found")
        return task

    async def by_name(self, name: str) -> StoredTask | None:
        task_id = await self._store.get(task_name_key(name))
        return await self.get(task_id.decode()) if task_id is not None else None

    async def register(
        self,
        name: str,
        artifact: StoredArtifact,
        *,
        description: str = "",
        metadata: dict[str, str] | None = None,
        update: bool = True,
    ) -> Registration:
        """Create the task, keep it when unchanged, or (``update``) give it a new artifact version.

        With ``update=False`` a different artifact for an existing name is left alone and the caller
        sees ``created=False, updated=False`` with the stored task, to refuse it.
        """
        validate_name(name)
        validate_artifact(artifact)
        async with self._lock:
            existing = await self.by_name(name)
            now = time.time()
            if existing is None:
                task = StoredTask(
                    task_id=new_id(),
                    name=name,
                    artifact=artifact,
                    created_at=now,
                    updated_at=now,
                    description=description,
                    metadata=dict(metadata or {}),
                )
                await self._store.batch(
                    {task_key(task.task_id): task.encode(), task_name_key(name): task.task_id.encode()}
                )
                self._cache[task.task_id] = task
                return Registration(task, created=True, updated=False)
            if existing.artifact == artifact or not update:
                return Registration(existing, created=False, updated=False)
            replaced = {
                "version": existing.version,
                "replaced_at": now,
                "artifact": asdict(existing.artifact),
            }
            task = replace(
                existing,
                artifact=artifact,
                version=existing.version + 1,
                updated_at=now,
                description=description or existing.description,
                metadata={**existing.metadata, **(metadata or {})},
                history=[*existing.history, replaced],
            )
            await self._store.put(task_key(task.task_id), task.encode())
            self._cache[task.task_id] = task
            return Registration(task, created=False, updated=True)

    async def page(self, prefix: str, start_after: str, limit: int | None) -> list[StoredTask]:
        """Tasks whose name starts with ``prefix``, in name order, after the name ``start_after``."""
        after = task_name_key(start_after) if start_after else ""
        rows = await self._store.scan(task_name_key(prefix), start_after=after, limit=limit)
        tasks = []
        for _, task_id in rows:
            task = await self.get(task_id.decode())
            if task is not None:
                tasks.append(task)
        return tasks

    async def all(self) -> list[StoredTask]:
        return await self.page("", "", None)

    def forget(self, task_id: str | None = None) -> None:
        """Drop the copy of ``task_id`` (``None``: of every task): another server changed it."""
        if task_id is None:
            self._cache.clear()
        else:
            self._cache.pop(task_id, None)

    async def delete(self, task: StoredTask) -> None:
        await self._store.batch(deletes=[task_key(task.task_id), task_name_key(task.name)])
        self._cache.pop(task.task_id, None)


__all__ = [
    "ARTIFACT_TYPES",
    "MEMORY_LIMIT_MB",
    "TASK_NAME",
    "Registration",
    "TaskRegistry",
    "memory_limit_mb",
    "validate_artifact",
]
