"""ObjectService: thin handlers over the object repository (docs/protocol.md, "ObjectService")."""

from __future__ import annotations

from typing import Any

import grpc

from spear_sdk.wire import object_pb2 as opb
from spear_sdk.wire import object_pb2_grpc

from . import convert
from .objects import ObjectRepository
from .rpc import fitting, page_size, paginate, require, unary

Context = grpc.aio.ServicerContext[Any, Any]


class ObjectService(object_pb2_grpc.ObjectServiceServicer):
    def __init__(self, objects: ObjectRepository, message_limit: int) -> None:
        self.objects = objects
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
        return opb.GetObjectResponse(
            found=True, object=convert.object_message(obj, include_value=request.include_value)
        )

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
