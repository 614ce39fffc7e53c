"""Large values as objects: pickle protocol 5 with its buffers out of band, laid out to be memory-mapped.

A value's object holds a small header, the pickle stream, and each out-of-band buffer (a numpy array's or a
pandas block's memory) on a 64-byte boundary. Writing one copies each buffer once, straight from the
value's memory into the file or the transfer; reading one from a mapped file gives arrays that point into
the mapping, so nothing is copied at all (:func:`loads`).

Layout::

    MAGIC (8) | pickle length (u64) | buffer count (u32) | buffer lengths (u64 each) | padding
    pickle stream | padding | buffer 0 | padding | buffer 1 | ...

The same layout travels in chunks over ``PutObjectStream`` / ``GetObjectStream``, so a reader on another
machine rebuilds the value from one buffer of the object's size.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import pickle
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import cloudpickle
from google.protobuf import any_pb2

from . import codec

MAGIC = b"SPOBJ\x00\x01\x00"
#: The ``content-type`` metadata of objects in this layout.
CONTENT_TYPE = "application/x-spear-pickle5"
ALIGN = 64
_HEAD = struct.Struct("<8sQI")
_LENGTH = struct.Struct("<Q")


class BlobError(ValueError):
    """Bytes that are not an object in this layout."""


def _pad(size: int) -> int:
    return -size % ALIGN


@dataclass(frozen=True)
class Blob:
    """A value laid out as an object, without copying its buffers: the pieces to write, in order."""

    header: bytes
    payload: bytes
    buffers: tuple[memoryview, ...]

    @property
    def size(self) -> int:
        size = len(self.header) + len(self.payload)
        for buffer in self.buffers:
            size += _pad(size) + buffer.nbytes
        return size

    def pieces(self) -> Iterator[memoryview | bytes]:
        """The object's bytes as consecutive pieces (padding included)."""
        yield self.header
        yield self.payload
        offset = len(self.header) + len(self.payload)
        for buffer in self.buffers:
            gap = _pad(offset)
            if gap:
                yield bytes(gap)
            yield buffer
            offset += gap + buffer.nbytes

    def chunks(self, size: int) -> Iterator[memoryview | bytes]:
        """The object's bytes in pieces of at most ``size`` bytes (views into the value where possible)."""
        for piece in self.pieces():
            view = memoryview(piece).cast("B")
            for start in range(0, len(view), size):
                yield view[start : start + size]

    def write_to(self, fd: int) -> None:
        """Write the object to an open file descriptor."""
        for piece in self.chunks(1 << 30):
            view = memoryview(piece)
            while view:
                written = os.write(fd, view)
                view = view[written:]

    def write_new_file(self, path: str | os.PathLike[str]) -> None:
        """Write the object to a new file at ``path`` (which must not exist); nothing is left there if
        writing fails."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            self.write_to(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            raise
        os.close(fd)

    def copy_into(self, target: mmap.mmap) -> None:
        """Copy the object to the start of a writable mapping at least :attr:`size` bytes long."""
        if len(target) < self.size:
            raise BlobError(f"a mapping of {len(target)} bytes is shorter than the {self.size} of the object")
        offset = 0
        for piece in self.pieces():
            view = memoryview(piece).cast("B")
            target[offset : offset + len(view)] = view
            offset += len(view)

    def write_over(self, path: str | os.PathLike[str]) -> None:
        """Write the object at the start of the existing file ``path``, at least :attr:`size` bytes long
        (a recycled object file, whose pages are already in memory: writing into them costs a copy, where
        a new file's pages must first be found one by one). Bytes past :attr:`size` are left as they are:
        the header says where the object ends."""
        fd = os.open(path, os.O_WRONLY)
        try:
            if os.fstat(fd).st_size < self.size:
                raise BlobError(f"{path} is shorter than the {self.size} bytes of the object")
            offset = 0
            for piece in self.chunks(1 << 30):
                view = memoryview(piece)
                while view:
                    written = os.pwrite(fd, view, offset)
                    view = view[written:]
                    offset += written
        finally:
            os.close(fd)


def stored_size(head: bytes) -> int | None:
    """The size of an object in this layout from its first bytes (its header, up to the buffer lengths),
    or None when they are not such an object's."""
    if len(head) < _HEAD.size:
        return None
    magic, payload_length, count = _HEAD.unpack_from(head)
    if magic != MAGIC or len(head) < _HEAD.size + count * _LENGTH.size:
        return None
    offset = _HEAD.size + count * _LENGTH.size
    size: int = offset + _pad(offset) + payload_length
    for i in range(count):
        length: int = _LENGTH.unpack_from(head, _HEAD.size + i * _LENGTH.size)[0]
        size += _pad(size) + length
    return size


def file_stored_size(path: str | os.PathLike[str]) -> int | None:
    """The size of the object at the start of the file ``path`` (see :func:`stored_size`)."""
    with open(path, "rb") as f:
        head = f.read(_HEAD.size)
        if len(head) < _HEAD.size or head[: len(MAGIC)] != MAGIC:
            return None
        count = _HEAD.unpack(head)[2]
        return stored_size(head + f.read(count * _LENGTH.size))


def dumps(value: object) -> Blob:
    """Lay ``value`` out as an object; its buffers stay where they are until written."""
    raw: list[pickle.PickleBuffer] = []
    payload = cloudpickle.dumps(value, protocol=5, buffer_callback=raw.append)
    buffers: list[memoryview] = []
    for buffer in raw:
        try:
            buffers.append(buffer.raw())
        except BufferError:  # not contiguous: copied once into a contiguous piece
            buffers.append(memoryview(bytes(memoryview(buffer).tobytes())))
    lengths = b"".join(_LENGTH.pack(b.nbytes) for b in buffers)
    header = _HEAD.pack(MAGIC, len(payload), len(buffers)) + lengths
    header += bytes(_pad(len(header)))
    return Blob(header, payload, tuple(buffers))


def is_blob(data: bytes | bytearray | memoryview) -> bool:
    return bytes(data[: len(MAGIC)]) == MAGIC


def loads(data: bytes | bytearray | memoryview | mmap.mmap) -> object:
    """The value of an object; its arrays point into ``data`` (keep it alive, and read-only if it is)."""
    view = memoryview(data).cast("B")
    if len(view) < _HEAD.size:
        raise BlobError("an object shorter than its header")
    magic, payload_length, count = _HEAD.unpack_from(view)
    if magic != MAGIC:
        raise BlobError("not an object of pickled values")
    offset = _HEAD.size
    lengths = [_LENGTH.unpack_from(view, offset + i * _LENGTH.size)[0] for i in range(count)]
    offset += count * _LENGTH.size
    offset += _pad(offset)
    payload = view[offset : offset + payload_length]
    offset += payload_length
    buffers = []
    for length in lengths:
        offset += _pad(offset)
        buffers.append(view[offset : offset + length])
        offset += length
    if offset > len(view):
        raise BlobError(f"an object of {len(view)} bytes whose layout needs {offset}")
    return pickle.loads(payload, buffers=buffers)


_PLAIN = (str, bytes, bytearray, int, float, bool, type(None))


def inline_or_blob(value: object, limit: int, *, exact: bool = True) -> any_pb2.Any | Blob:
    """``value`` encoded to travel inline, or laid out as an object when its serialized size passes
    ``limit``: without serializing it twice when it is large (a container of plain values is encoded as
    usual and measured; anything else, an array or a frame, is laid out first, which copies nothing)."""
    if isinstance(value, _PLAIN) or (isinstance(value, (list, tuple, dict)) and _shallow_plain(value)):
        message = codec.encode(value, exact=exact)
        return message if message.ByteSize() <= limit else dumps(value)
    laid_out = dumps(value)
    if laid_out.size > limit:
        return laid_out
    if not laid_out.buffers:  # a plain pickle stream: the inline form as it is
        return any_pb2.Any(type_url=codec.PICKLE_TYPE_URL, value=laid_out.payload)
    return codec.encode(value, exact=exact)


def _shallow_plain(value: list[object] | tuple[object, ...] | dict[object, object]) -> bool:
    items = value.values() if isinstance(value, dict) else value
    return all(isinstance(item, _PLAIN) or type(item) in (list, tuple, dict) for item in items)
