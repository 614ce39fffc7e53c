"""ObjectService: thin handlers over the object repository (docs/protocol.md, "ObjectService")."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

import grpc

from spear_sdk.wire import object_pb2 as opb
from spear_sdk.wire import object_pb2_grpc
from spear_sdk.wire.errors import InvalidArgument, NotFound

from . import convert
from .config import Config
from .objects import ObjectRepository, over_limit
from .rpc import fitting, page_size, paginate, require, server_stream, unary

Context = grpc.aio.ServicerContext[Any, Any]


class ObjectService(object_pb2_grpc.ObjectServiceServicer):
    def __init__(self, objects: ObjectRepository, config: Config, message_limit: int) -> None:
        self.objects = objects
        self.config = config
        self.message_limit = message_limit

    @unary
    async def PutObject(self, request: opb.PutObjectRequest, context: Context) -> opb.PutObjectResponse:
        obj = await self.objects.put(request.key, request.value, dict(request.metadata), request.overwrite)
        return opb.PutObjectResponse(success=True, message="stored", object_meta=convert.object_meta(obj))

    @unary
    async def GetObject(self, request: opb.GetObjectRequest, context: Context) -> opb.GetObjectResponse:
        obj = await self.objects.get(request.key)
        if obj is None:
            return opb.GetObjectResponse(found=False, message=f"object {request.key!r} not found")
        message = convert.object_message(obj, include_value=False)
        if request.include_value:
            message.value = self.objects.read_value(obj, self.message_limit - (64 << 10))
            self.objects.fetched(obj)
        return opb.GetObjectResponse(found=True, object=message)

    @unary
    async def ListObjects(self, request: opb.ListObjectsRequest, context: Context) -> opb.ListObjectsResponse:
        size = page_size(request.limit)
        objects = await self.objects.list(request.prefix, request.start_after, size + 1)
        page, has_more, next_after = paginate(objects, size, lambda o: o.key)
        messages = [convert.object_message(o, include_value=request.include_values) for o in page]
        fit = fitting((m.ByteSize() for m in messages), self.message_limit)
        if fit < len(messages):
            messages, has_more, next_after = messages[:fit], True, messages[fit - 1].key
        return opb.ListObjectsResponse(objects=messages, has_more=has_more, next_start_after=next_after)

    @unary
    async def AddObjectRef(
        self, request: opb.AddObjectRefRequest, context: Context
    ) -> opb.AddObjectRefResponse:
        require(request.key, "key")
        count = await self.objects.add_ref(request.key, request.count)
        return opb.AddObjectRefResponse(success=True, message="reference added", new_ref_count=count)

    @unary
    async def RemoveObjectRef(
        self, request: opb.RemoveObjectRefRequest, context: Context
    ) -> opb.RemoveObjectRefResponse:
        require(request.key, "key")
        count, deleted = await self.objects.remove_ref(request.key, request.count)
        message = "object deleted" if deleted else "reference removed"
        return opb.RemoveObjectRefResponse(
            success=True, message=message, new_ref_count=count, deleted=deleted
        )

    @unary
    async def PinObject(self, request: opb.PinObjectRequest, context: Context) -> opb.PinObjectResponse:
        require(request.key, "key")
        await self.objects.set_pinned(request.key, True)
        return opb.PinObjectResponse(success=True, message="pinned")

    @unary
    async def UnpinObject(self, request: opb.UnpinObjectRequest, context: Context) -> opb.UnpinObjectResponse:
        require(request.key, "key")
        deleted = await self.objects.set_pinned(request.key, False)
        message = "unpinned; deleted, as nothing references it" if deleted else "unpinned"
        return opb.UnpinObjectResponse(success=True, message=message)

    @unary
    async def DeleteObject(
        self, request: opb.DeleteObjectRequest, context: Context
    ) -> opb.DeleteObjectResponse:
        require(request.key, "key")
        await self.objects.delete(request.key, request.force)
        return opb.DeleteObjectResponse(success=True, message="deleted", deleted=True)

    # -- extensions: objects of any size, in chunks or through files on this machine ------------------------

    @unary
    async def PutObjectStream(
        self, requests: AsyncIterator[opb.ObjectChunk], context: Context
    ) -> opb.PutObjectResponse:
        """The first message names the object (key, metadata, overwrite, size); each carries a piece.
        The pieces go straight to a file in the incoming folder, which becomes the object at the end."""
        files = self.objects.files
        if files is None:
            raise InvalidArgument("this server keeps no object files")
        first: opb.ObjectChunk | None = None
        path = files.new_incoming()
        written = 0
        limit = self.objects.max_object_bytes
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            async for chunk in requests:
                if first is None:
                    first = chunk
                    require(first.key, "key")
                    if first.size > limit:
                        raise over_limit(f"object {first.key!r}", first.size, limit)
                written += len(chunk.data)
                if written > limit:
                    raise over_limit(f"object {first.key!r}", written, limit)
                view = memoryview(chunk.data)
                while view:
                    view = view[os.write(fd, view) :]
        except BaseException:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            raise
        os.close(fd)
        if first is None:
            path.unlink()
            raise InvalidArgument("PutObjectStream needs at least one message, naming the object")
        if first.size and written != first.size:
            path.unlink()
            raise InvalidArgument(f"object {first.key!r} announced {first.size} bytes but {written} arrived")
        obj = await self.objects.adopt(first.key, path, dict(first.metadata), first.overwrite)
        return opb.PutObjectResponse(success=True, message="stored", object_meta=convert.object_meta(obj))

    @server_stream
    async def GetObjectStream(
        self, request: opb.GetObjectRequest, context: Context
    ) -> AsyncIterator[opb.ObjectChunk]:
        """The object's meta first, then its value in pieces of at most 1 MiB."""
        require(request.key, "key")
        obj = await self.objects.get(request.key)
        if obj is None:
            raise NotFound(f"object {request.key!r} not found")
        yield opb.ObjectChunk(key=obj.key, size=obj.size, meta=convert.object_meta(obj))
        for piece in self.objects.chunks(obj):
            yield opb.ObjectChunk(data=piece)
        self.objects.fetched(obj)

    @unary
    async def GetObjectStoreInfo(
        self, request: opb.ObjectStoreInfoRequest, context: Context
    ) -> opb.ObjectStoreInfoResponse:
        files = self.objects.files
        return opb.ObjectStoreInfoResponse(
            directory=str(files.root) if files else "",
            host_token=files.host_token if files else "",
            max_object_bytes=self.objects.max_object_bytes,
            inline_limit_bytes=self.config.inline_limit,
        )

    @unary
    async def AdoptObjectFile(
        self, request: opb.AdoptObjectFileRequest, context: Context
    ) -> opb.PutObjectResponse:
        require(request.key, "key")
        files = self.objects.files
        if files is None:
            raise InvalidArgument("this server keeps no object files")
        try:
            path = files.incoming_file(request.file_name)
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from None
        if not path.is_file():
            raise NotFound(f"no file {request.file_name!r} in {files.incoming}")
        obj = await self.objects.adopt(request.key, path, dict(request.metadata), request.overwrite)
        return opb.PutObjectResponse(success=True, message="stored", object_meta=convert.object_meta(obj))

    @unary
    async def OpenObject(self, request: opb.OpenObjectRequest, context: Context) -> opb.OpenObjectResponse:
        require(request.key, "key")
        obj = await self.objects.get(request.key)
        if obj is None:
            return opb.OpenObjectResponse(found=False)
        path = self.objects.path(obj)
        value = b"" if path else self.objects.read_value(obj, self.message_limit - (64 << 10))
        self.objects.fetched(obj)
        return opb.OpenObjectResponse(found=True, meta=convert.object_meta(obj), path=path, value=value)
