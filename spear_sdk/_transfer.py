"""Moving large values: objects put and fetched, arguments sent by reference, references read back.

A value whose serialized size passes the inline limit (1 MiB unless told) never travels inside a call: it
is laid out as an object (``wire.blob``: pickle protocol 5, its arrays' memory out of band) and the call
carries a reference. How the object's bytes move depends on where the server is:

* **On this machine** (a lab, a local ``spearlet serve``): the server announces its object directory and a
  token it wrote there; when this process reads the same token, it writes objects straight into the
  directory (shared memory for a lab) and maps them into memory to read them, so a value is copied at most
  once on the way in and not at all on the way out.
* **Elsewhere**: ``PutObjectStream`` and ``GetObjectStream`` move the bytes in 1 MiB pieces, so no gRPC
  message limit applies and each side holds at most one extra copy of the value.

Everything here runs on the runtime loop, like ``Core``; file writes go to a thread so the loop keeps
serving other calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import mmap
import os
import uuid
import weakref
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import any_pb2

from ._connection import Connection
from .wire import blob, codec, function_pb2, object_dir, object_pb2, refs
from .wire.errors import InvalidArgument, NotFound, SpearError, Unimplemented

#: Values whose serialized size passes this travel by reference, unless the client is told otherwise.
DEFAULT_INLINE_LIMIT = 1 << 20
CHUNK_BYTES = 1 << 20
PUT_PREFIX = "spear/put/"
ARGUMENT_PREFIX = "spear/args/"
#: Objects a worker made for a result (``spear/results/{execution_id}/...``).
RESULT_PREFIX = "spear/results/"
#: Metadata of every object made here: what it holds, and (for arguments) that nobody asked for it.
TYPE_KEY = "spear.type"
IMPLICIT_KEY = "spear.implicit"


@dataclass(frozen=True)
class StoredRef:
    """An object made by :meth:`ObjectTransfer.put`: its key, size and the type of its value."""

    key: str
    size_bytes: int
    type_name: str


@dataclass(frozen=True)
class Arguments:
    """A call's parameters, with the keys of the objects they refer to and of those made for them."""

    parameters: list[function_pb2.FunctionParameter]
    object_refs: list[str]
    implicit: list[str]


class _Local:
    """The server's object directory, seen from this process."""

    def __init__(self, directory: str) -> None:
        self.root = Path(directory)


class ObjectTransfer:
    def __init__(self, connection: Connection, inline_limit: int | None = None) -> None:
        self._connection = connection
        limit = DEFAULT_INLINE_LIMIT if inline_limit is None else inline_limit
        if limit < 0:
            raise ValueError(f"inline_limit_bytes must not be negative, not {limit}")
        # Half a message at most, so that whatever travels inline always fits one.
        self.inline_limit = min(limit, connection.message_limit // 2)
        self._local: asyncio.Future[_Local | None] | None = None
        self._releasing: set[asyncio.Future[None]] = set()

    @property
    def _objects(self) -> Any:
        return self._connection.objects

    # -- where the server keeps objects ---------------------------------------------------------------

    async def local(self) -> _Local | None:
        """The server's object directory if this process shares its file system (asked once)."""
        if self._local is None:
            self._local = asyncio.ensure_future(self._find_local())
        try:
            return await asyncio.shield(self._local)
        except BaseException:
            self._local = None  # ask again next time
            raise

    async def _find_local(self) -> _Local | None:
        try:
            info = await self._connection.call(
                self._objects.GetObjectStoreInfo, object_pb2.ObjectStoreInfoRequest()
            )
        except Unimplemented:
            return None
        if not info.directory or not info.host_token:
            return None
        try:
            token = (Path(info.directory) / ".spear-host").read_text()
        except OSError:
            return None
        if token != info.host_token or not os.access(Path(info.directory) / object_dir.INCOMING, os.W_OK):
            return None
        return _Local(info.directory)

    # -- putting and getting --------------------------------------------------------------------------

    async def put(self, value: object, *, implicit: bool = False) -> StoredRef:
        """Store ``value`` as a new object."""
        prefix = ARGUMENT_PREFIX if implicit else PUT_PREFIX
        key = f"{prefix}{uuid.uuid4().hex}"
        type_name = _type_name(value)
        metadata = {"content-type": blob.CONTENT_TYPE, TYPE_KEY: type_name}
        if implicit:
            metadata[IMPLICIT_KEY] = "argument"
        laid_out = _lay_out(value)
        await self.put_blob(key, laid_out, metadata)
        return StoredRef(key, laid_out.size, type_name)

    async def put_blob(self, key: str, laid_out: blob.Blob, metadata: Mapping[str, str]) -> None:
        local = await self.local()
        if local is not None:
            name = uuid.uuid4().hex
            try:
                await asyncio.to_thread(object_dir.write_object, local.root, laid_out, name)
            except OSError:
                pass  # the directory is not ours to write after all: send the bytes instead
            else:
                request = object_pb2.AdoptObjectFileRequest(key=key, file_name=name, metadata=metadata)
                await self._connection.call(self._objects.AdoptObjectFile, request)
                return
        await self._connection.call_stream_unary(
            self._objects.PutObjectStream, _put_messages(key, laid_out, metadata)
        )

    async def get(self, key: str, *, owned: bool = False) -> object:
        """The value of the object ``key``. ``owned``: nobody else will read it (the result of a plain
        call, whose execution nobody holds): the object goes as soon as the value does, so its memory
        serves the next large value at once, instead of after the server's grace period."""
        owned = owned and key.startswith(RESULT_PREFIX)  # never an object someone put
        local = await self.local()
        if local is not None:
            opened = await self._connection.call(
                self._objects.OpenObject, object_pb2.OpenObjectRequest(key=key)
            )
            if not opened.found:
                raise NotFound(_gone(key))
            if opened.path:
                value, mapping = await asyncio.to_thread(_map_file, opened.path)
                if owned:
                    self._release_with(mapping, key)
                return value
            value = _value_of(opened.value)
        else:
            value = await self._fetch(key)
        if owned:
            await self.release([key])
        return value

    async def _fetch(self, key: str) -> object:
        """The value of the object ``key``, read in chunks over the connection."""
        meta: Any = None
        buffer = bytearray()
        offset = 0
        try:
            async for chunk in self._connection.stream(
                self._objects.GetObjectStream, object_pb2.GetObjectRequest(key=key, include_value=True)
            ):
                if meta is None:
                    meta = chunk.meta
                    buffer = bytearray(chunk.size)
                    continue
                end = offset + len(chunk.data)
                buffer[offset:end] = chunk.data
                offset = end
        except NotFound:
            raise NotFound(_gone(key)) from None
        return _value_of(buffer)

    def _release_with(self, mapping: mmap.mmap, key: str) -> None:
        """Drop the object ``key`` once ``mapping`` (which its value points into) is freed."""
        loop = asyncio.get_running_loop()

        def release() -> None:  # in whichever thread the value died
            with contextlib.suppress(RuntimeError):  # the loop is gone: the grace period reclaims it
                loop.call_soon_threadsafe(self._release_soon, key)

        weakref.finalize(mapping, release).atexit = False

    def _release_soon(self, key: str) -> None:
        task = asyncio.ensure_future(self.release([key]))
        self._releasing.add(task)
        task.add_done_callback(self._released)

    def _released(self, task: asyncio.Future[None]) -> None:
        self._releasing.discard(task)
        if not task.cancelled():
            task.exception()  # a closed connection: the server's grace period reclaims the object

    async def delete(self, key: str) -> None:
        await self._connection.call(self._objects.DeleteObject, object_pb2.DeleteObjectRequest(key=key))

    async def release(self, keys: Sequence[str]) -> None:
        """Drop this client's reference to objects it made for a call's arguments."""
        for key in keys:
            with contextlib.suppress(SpearError):
                await self._connection.call(
                    self._objects.RemoveObjectRef, object_pb2.RemoveObjectRefRequest(key=key, count=1)
                )

    # -- values in calls ------------------------------------------------------------------------------

    async def arguments(self, args: Sequence[object], kwargs: Mapping[str, object]) -> Arguments:
        """Encode a call's arguments, putting the large ones as objects first."""
        encoded = Arguments([], [], [])
        try:
            for position, value in enumerate(args):
                message = await self._argument(value, f"argument {position}", encoded)
                encoded.parameters.append(function_pb2.FunctionParameter(value=message))
            for name, value in kwargs.items():
                message = await self._argument(value, f"argument {name!r}", encoded)
                encoded.parameters.append(function_pb2.FunctionParameter(name=name, value=message))
        except BaseException:
            await self.release(encoded.implicit)
            raise
        return encoded

    async def _argument(self, value: object, what: str, encoded: Arguments) -> any_pb2.Any:
        key = getattr(value, "_spear_object_key", None)
        if isinstance(key, str):  # an ObjectRef: the function gets its value
            encoded.object_refs.append(key)
            return refs.ref_any(key)
        try:
            with refs.collecting() as found:
                message = blob.inline_or_blob(value, self.inline_limit)
        except (codec.CodecError, blob.BlobError) as exc:
            raise InvalidArgument(f"{what} cannot be sent: {exc}") from None
        except Exception as exc:  # pickling raises many types for what it cannot serialize
            raise InvalidArgument(f"{what} cannot be sent: {type(exc).__name__}: {exc}") from None
        encoded.object_refs.extend(found)
        if isinstance(message, any_pb2.Any):
            return message
        key = f"{ARGUMENT_PREFIX}{uuid.uuid4().hex}"
        metadata = {"content-type": blob.CONTENT_TYPE, TYPE_KEY: _type_name(value), IMPLICIT_KEY: "argument"}
        await self.put_blob(key, message, metadata)
        encoded.implicit.append(key)
        encoded.object_refs.append(key)
        return refs.ref_any(key)

    async def value(self, message: any_pb2.Any, *, owned: bool = False) -> object:
        """A result or streamed value: fetched when it came by reference (``owned``: see :meth:`get`)."""
        key = refs.ref_key(message)
        if key is not None:
            return await self.get(key, owned=owned)
        try:
            return codec.decode(message)
        except codec.CodecError as exc:
            raise InvalidArgument(f"the result cannot be read here: {exc}") from None


def _type_name(value: object) -> str:
    kind = type(value)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def _lay_out(value: object) -> blob.Blob:
    try:
        return blob.dumps(value)
    except Exception as exc:  # pickling raises many types for what it cannot serialize
        raise InvalidArgument(f"a value of type {_type_name(value)} cannot be stored: {exc}") from None


def _map_file(path: str) -> tuple[object, mmap.mmap]:
    """The value of an object file, its arrays in a private copy-on-write mapping of the file: nothing is
    copied until the caller changes it, and changes stay in this process. The mapping too: it lives as
    long as the value points into it."""
    with open(path, "rb") as f:
        mapping = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    return blob.loads(mapping), mapping


def _value_of(data: bytes | bytearray) -> object:
    if blob.is_blob(data):
        return blob.loads(data)
    return bytes(data)  # an object some other client stored: its raw bytes


def _gone(key: str) -> str:
    return f"object {key!r} not found (deleted, or a result object reclaimed after it was fetched)"


async def _put_messages(
    key: str, laid_out: blob.Blob, metadata: Mapping[str, str]
) -> AsyncIterator[object_pb2.ObjectChunk]:
    yield object_pb2.ObjectChunk(key=key, metadata=metadata, size=laid_out.size)
    for piece in laid_out.chunks(CHUNK_BYTES):
        yield object_pb2.ObjectChunk(data=bytes(piece))
