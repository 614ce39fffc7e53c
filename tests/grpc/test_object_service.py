"""ObjectService over real loopback gRPC: every RPC's normal answer and every error status of
docs/protocol.md."""

from __future__ import annotations

import time

import grpc
from harness import Harness, HarnessFactory, expect_code, pages, poll

from spear_sdk.wire import function_pb2 as fpb
from spear_sdk.wire import object_pb2 as opb
from spear_sdk.wire import object_pb2_grpc as ogrpc

MIB = 1 << 20


def big_message_channel(h: Harness) -> grpc.aio.Channel:
    """A client channel that, like the server, lifts gRPC's 4 MiB default message limit."""
    limit = 80 << 20
    return grpc.aio.insecure_channel(
        h.server.address,
        options=[("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)],
    )


async def harness(make_harness: HarnessFactory, **config: object) -> Harness:
    # The object service does not run code: the thread executor keeps start-up cheap.
    return await make_harness(executor="thread", **config)


async def put(h: Harness, key: str, value: bytes = b"v", **fields: object) -> opb.PutObjectResponse:
    return await h.obj.PutObject(opb.PutObjectRequest(key=key, value=value, **fields))


async def get(h: Harness, key: str, include_value: bool = True) -> opb.GetObjectResponse:
    return await h.obj.GetObject(opb.GetObjectRequest(key=key, include_value=include_value))


async def list_all(h: Harness, prefix: str, limit: int) -> list[opb.ListObjectsResponse]:
    return await pages(h.obj.ListObjects, opb.ListObjectsRequest(prefix=prefix, limit=limit), most=100)


# -- empty keys -------------------------------------------------------------------------------------


async def test_empty_key_is_invalid_argument_for_every_keyed_rpc(make_harness: HarnessFactory) -> None:
    h = await harness(make_harness)
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    await expect_code(h.obj.PutObject(opb.PutObjectRequest(key="", value=b"x")), invalid)
    await expect_code(h.obj.GetObject(opb.GetObjectRequest(key="")), invalid)
    await expect_code(h.obj.AddObjectRef(opb.AddObjectRefRequest(key="")), invalid)
    await expect_code(h.obj.RemoveObjectRef(opb.RemoveObjectRefRequest(key="")), invalid)
    await expect_code(h.obj.PinObject(opb.PinObjectRequest(key="")), invalid)
    await expect_code(h.obj.UnpinObject(opb.UnpinObjectRequest(key="")), invalid)
    await expect_code(h.obj.DeleteObject(opb.DeleteObjectRequest(key="")), invalid)
    await expect_code(h.obj.DeleteObject(opb.DeleteObjectRequest(key="", force=True)), invalid)
    listed = await h.obj.ListObjects(opb.ListObjectsRequest())
    assert list(listed.objects) == [], "nothing was stored by the failing calls"


# -- put and get ------------------------------------------------------------------------------------


async def test_put_new_object_then_get_it(make_harness: HarnessFactory) -> None:
    h = await harness(make_harness)
    before = int(time.time())
    response = await put(h, "a/b", b"hello", metadata={"content-type": "text/plain", "owner": "me"})
    after = int(time.time())
    assert response.success
    meta = response.object_meta
    assert meta.key == "a/b"
    assert meta.size == 5
    assert meta.ref_count == 1
    assert not meta.pinned
    assert before <= meta.created_at <= after
    assert meta.updated_at == meta.created_at
    assert dict(meta.metadata) == {"content-type": "text/plain", "owner": "me"}

    got = await get(h, "a/b")
    assert got.found
    obj = got.object
    assert (obj.key, obj.value, obj.size, obj.ref_count, obj.pinned) == ("a/b", b"hello", 5, 1, False)
    assert (obj.created_at, obj.updated_at) == (meta.created_at, meta.updated_at)
    assert dict(obj.metadata) == {"content-type": "text/plain", "owner": "me"}


async def test_get_without_value_reports_size_only(make_harness: HarnessFactory) -> None:
    h = await harness(make_harness)
    await put(h, "big", b"x" * 1234)
    got = await get(h, "big", include_value=False)
    assert got.found
    assert got.object.value == b""
    assert got.object.size == 1234
    assert got.object.key == "big"


async def test_empty_value_is_a_real_object(make_harness: HarnessFactory) -> None:
    h = await harness(make_harness)
    response = await put(h, "empty", b"")
    assert response.object_meta.size == 0
    got = await get(h, "empty")
    assert got.found
    assert got.object.value == b""


async def test_existing_key_without_overwrite_is_already_exists(make_harness: HarnessFactory) -> None:
    h = await harness(make_harness)
    await put(h, "k", b"first", metadata={"v": "1"})
    await expect_code(put(h, "k", b"second"), grpc.StatusCode.ALREADY_EXISTS)
    got = await get(h, "k")
    assert got.object.value == b"first", "a refused put must not touch the stored object"
    assert dict(got.object.metadata) == {"v": "1"}


async def test_overwrite_replaces_value_and_keeps_refs_pin_and_created_at(
    make_harness: HarnessFactory,
) -> None:
    h = await harness(make_harness)
    first = (await put(h, "k", b"first", metadata={"v": "1"})).object_meta
    await h.obj.AddObjectRef(opb.AddObjectRefRequest(key="k", count=2))
    await h.obj.PinObject(opb.PinObjectRequest(key="k"))

    # Times are whole Unix seconds on the wire: wait for the next second so that created_at and
    # updated_at can tell "kept" from "rewritten".
    async def next_second() -> bool:
        return int(time.time()) > first.created_at

    await poll(next_second, timeout=3, what="the next wall-clock second")

    replaced = await put(h, "k", b"second value", metadata={"v": "2"}, overwrite=True)
    meta = replaced.object_meta
    assert meta.size == len(b"second value")
    assert meta.ref_count == 3
    assert meta.pinned
    assert meta.created_at == first.created_at
    assert meta.updated_at > first.created_at
    assert dict(meta.metadata) == {"v": "2"}

    got = (await get(h, "k")).object
    assert got.value == b"second value"
    assert (got.ref_count, got.pinned, got.created_at) == (3, True, first.created_at)
    assert got.updated_at == meta.updated_at


async def test_overwrite_of_a_missing_key_creates_it(make_harness: HarnessFactory) -> None:
    h = await harness(make_harness)
    response = await put(h, "fresh", b"v", overwrite=True)
    assert response.object_meta.ref_count == 1
    assert (await get(h, "fresh")).found


async def test_unknown_key_is_not_found(make_harness: HarnessFactory) -> None:
    h = await harness(make_harness)
    got = await get(h, "missing")
    assert not got.found
    assert got.message
    missing = grpc.StatusCode.NOT_FOUND
    await expect_code(h.obj.AddObjectRef(opb.AddObjectRefRequest(key="missing")), missing)
    await expect_code(h.obj.RemoveObjectRef(opb.RemoveObjectRefRequest(key="missing")), missing)
    await expect_code(h.obj.PinObject(opb.PinObjectRequest(key="missing")), missing)
    await expect_code(h.obj.UnpinObject(opb.UnpinObjectRequest(key="missing")), missing)
    await expect_code(h.obj.DeleteObject(opb.DeleteObjectRequest(key="missing")), missing)
    await expect_code(h.obj.DeleteObject(opb.DeleteObjectRequest(key="missing", force=True)), missing)
    assert not (await get(h, "missing")).found, "no call may create the object"


# -- size limits ------------------------------------------------------------------------------------


async def test_object_over_max_object_bytes_is_resource_exhausted(make_harness: HarnessFactory) -> None:
    h = await harness(make_harness, max_object_bytes=1024)
    assert (await put(h, "fits", b"x" * 1024)).object_meta.size == 1024
    await expect_code(put(h, "too-big", b"x" * 1025), grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert not (await get(h, "too-big")).found
    # Overwriting an existing object with a too-big value leaves the old one intact.
    await expect_code(put(h, "fits", b"y" * 4096, overwrite=True), grpc.StatusCode.RESOURCE_EXHAUSTED)
    got = await get(h, "fits")
    assert got.object.value == b"x" * 1024
    health = await h.fn.GetHealth(fpb.GetHealthRequest(include_details=True))
    assert health.details.object_count == 1
    assert health.details.total_object_size == 1024


async def test_value_beyond_grpc_default_message_size_round_trips(make_harness: HarnessFactory) -> None:
    h = await harness(make_harness)
    channel = big_message_channel(h)
    try:
        stub = ogrpc.ObjectServiceStub(channel)
        value = bytes(range(256)) * (6 * MIB // 256)
        assert len(value) == 6 * MIB
        response = await stub.PutObject(opb.PutObjectRequest(key="six-mib", value=value))
        assert response.object_meta.size == 6 * MIB
        got = await stub.GetObject(opb.GetObjectRequest(key="six-mib", include_value=True))
        assert got.found
        assert got.object.size == 6 * MIB
        assert got.object.value == value
        listed = await stub.ListObjects(opb.ListObjectsRequest(prefix="six", include_values=True))
        assert [o.value == value for o in listed.objects] == [True]
    finally:
        await channel.close()


async def test_default_limit_is_met_before_the_transport_limit(make_harness: HarnessFactory) -> None:
    """With the default 64 MiB limit, one byte more is refused by the object store itself (a clear
    RESOURCE_EXHAUSTED naming the limit), not by gRPC's message size check (docs/protocol.md,
    "ObjectService")."""
    h = await harness(make_harness)
    channel = big_message_channel(h)
    try:
        stub = ogrpc.ObjectServiceStub(channel)
        error = await expect_code(
            stub.PutObject(opb.PutObjectRequest(key="huge", value=bytes(64 * MIB + 1))),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        )
        assert str(64 * MIB) in error.details(), error.details()
        assert not (await stub.GetObject(opb.GetObjectRequest(key="huge"))).found
    finally:
        await channel.close()


# -- references and pinning -------------------------------------------------------------------------


async def test_add_and_remove_refs(make_harness: HarnessFactory) -> None:
    h = await harness(make_harness)
    await put(h, "r", b"v")
    add = await h.obj.AddObjectRef(opb.AddObjectRefRequest(key="r", count=0))
    assert add.success
    assert add.new_ref_count == 2, "count 0 means 1"
    add = await h.obj.AddObjectRef(opb.AddObjectRefRequest(key="r", count=3))
    assert add.new_ref_count == 5
    assert (await get(h, "r")).object.ref_count == 5

    removed = await h.obj.RemoveObjectRef(opb.RemoveObjectRefRequest(key="r", count=2))
    assert removed.success
    assert (removed.new_ref_count, removed.deleted) == (3, False)
    removed = await h.obj.RemoveObjectRef(opb.RemoveObjectRefRequest(key="r"))
    assert (removed.new_ref_count, removed.deleted) == (2, False), "count 0 means 1"
    assert (await get(h, "r")).object.ref_count == 2

    removed = await h.obj.RemoveObjectRef(opb.RemoveObjectRefRequest(key="r", count=2))
    assert (removed.new_ref_count, removed.deleted) == (0, True)
    assert not (await get(h, "r")).found


async def test_removing_more_refs_than_held_deletes(make_harness: HarnessFactory) -> None:
    h = await harness(make_harness)
    await put(h, "r", b"v")
    removed = await h.obj.RemoveObjectRef(opb.RemoveObjectRefRequest(key="r", count=10))
    assert (removed.new_ref_count, removed.deleted) == (0, True)
    assert not (await get(h, "r")).found


async def test_negative_ref_count_change_is_invalid_argument(make_harness: HarnessFactory) -> None:
    h = await harness(make_harness)
    await put(h, "r", b"v")
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    await expect_code(h.obj.AddObjectRef(opb.AddObjectRefRequest(key="r", count=-1)), invalid)
    await expect_code(h.obj.RemoveObjectRef(opb.RemoveObjectRefRequest(key="r", count=-1)), invalid)
    # ... also for a key that does not exist: the argument is checked, not the store.
    await expect_code(h.obj.AddObjectRef(opb.AddObjectRefRequest(key="nope", count=-5)), invalid)
    assert (await get(h, "r")).object.ref_count == 1


async def test_ref_count_beyond_int32_is_refused_and_corrupts_nothing(make_harness: HarnessFactory) -> None:
    """``ref_count`` is an int32 on the wire: a count that would pass 2**31 - 1 must be refused with a
    clear status, and the object must stay readable (bad input never loses or corrupts stored data)."""
    h = await harness(make_harness)
    await put(h, "many", b"v")
    await put(h, "other", b"v")
    int32_max = 2**31 - 1
    outcome: int | grpc.aio.AioRpcError
    try:
        outcome = (
            await h.obj.AddObjectRef(opb.AddObjectRefRequest(key="many", count=int32_max))
        ).new_ref_count
    except grpc.aio.AioRpcError as error:
        outcome = error
    # Saturating at the int32 maximum would be a defensible answer too; storing 2**31 is not.
    expected = 1 if isinstance(outcome, grpc.aio.AioRpcError) else int32_max

    # Nothing stored may be corrupted: both calls answer INTERNAL if an unsendable count was stored.
    got = await get(h, "many")
    assert got.found
    assert got.object.ref_count == expected
    listed = await h.obj.ListObjects(opb.ListObjectsRequest())
    assert [(o.key, o.ref_count) for o in listed.objects] == [("many", expected), ("other", 1)]

    if isinstance(outcome, grpc.aio.AioRpcError):
        assert outcome.code() in {
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.OUT_OF_RANGE,
            grpc.StatusCode.FAILED_PRECONDITION,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        }, f"{outcome.code()}: {outcome.details()}"
    else:
        assert outcome == int32_max


async def test_pinned_object_survives_zero_refs_until_unpinned(make_harness: HarnessFactory) -> None:
    h = await harness(make_harness)
    await put(h, "p", b"v")
    pinned = await h.obj.PinObject(opb.PinObjectRequest(key="p"))
    assert pinned.success
    assert (await get(h, "p")).object.pinned
    # Pinning twice is harmless.
    assert (await h.obj.PinObject(opb.PinObjectRequest(key="p"))).success

    removed = await h.obj.RemoveObjectRef(opb.RemoveObjectRefRequest(key="p"))
    assert (removed.new_ref_count, removed.deleted) == (0, False)
    got = await get(h, "p")
    assert got.found
    assert (got.object.ref_count, got.object.pinned) == (0, True)

    unpinned = await h.obj.UnpinObject(opb.UnpinObjectRequest(key="p"))
    assert unpinned.success
    assert not (await get(h, "p")).found, "unpinning an object nothing references deletes it"


async def test_unpinning_a_referenced_object_keeps_it(make_harness: HarnessFactory) -> None:
    h = await harness(make_harness)
    await put(h, "p", b"v")
    await h.obj.PinObject(opb.PinObjectRequest(key="p"))
    assert (await h.obj.UnpinObject(opb.UnpinObjectRequest(key="p"))).success
    got = await get(h, "p")
    assert got.found
    assert (got.object.ref_count, got.object.pinned) == (1, False)
    # Unpinning an object that is not pinned is harmless too.
    assert (await h.obj.UnpinObject(opb.UnpinObjectRequest(key="p"))).success
    assert (await get(h, "p")).found


async def test_delete_object(make_harness: HarnessFactory) -> None:
    h = await harness(make_harness)
    await put(h, "d", b"v")
    await h.obj.AddObjectRef(opb.AddObjectRefRequest(key="d", count=4))
    deleted = await h.obj.DeleteObject(opb.DeleteObjectRequest(key="d"))
    assert deleted.success
    assert deleted.deleted
    assert not (await get(h, "d")).found
    await expect_code(h.obj.DeleteObject(opb.DeleteObjectRequest(key="d")), grpc.StatusCode.NOT_FOUND)


async def test_delete_pinned_needs_force(make_harness: HarnessFactory) -> None:
    h = await harness(make_harness)
    await put(h, "pd", b"v")
    await h.obj.PinObject(opb.PinObjectRequest(key="pd"))
    await expect_code(
        h.obj.DeleteObject(opb.DeleteObjectRequest(key="pd")), grpc.StatusCode.FAILED_PRECONDITION
    )
    got = await get(h, "pd")
    assert got.found
    assert got.object.pinned
    deleted = await h.obj.DeleteObject(opb.DeleteObjectRequest(key="pd", force=True))
    assert deleted.success
    assert deleted.deleted
    assert not (await get(h, "pd")).found


# -- listing ----------------------------------------------------------------------------------------


async def test_list_objects_by_prefix_with_and_without_values(make_harness: HarnessFactory) -> None:
    h = await harness(make_harness)
    for key in ("img/b", "img/a", "doc/x", "img", "imgs/c"):
        await put(h, key, key.encode(), metadata={"k": key})

    listed = await h.obj.ListObjects(opb.ListObjectsRequest(prefix="img/"))
    assert [o.key for o in listed.objects] == ["img/a", "img/b"]
    assert [o.value for o in listed.objects] == [b"", b""]
    assert [o.size for o in listed.objects] == [5, 5]
    assert [dict(o.metadata) for o in listed.objects] == [{"k": "img/a"}, {"k": "img/b"}]
    assert [o.ref_count for o in listed.objects] == [1, 1]
    assert not listed.has_more
    assert listed.next_start_after == ""

    with_values = await h.obj.ListObjects(opb.ListObjectsRequest(prefix="img", include_values=True))
    assert [(o.key, o.value) for o in with_values.objects] == [
        ("img", b"img"),
        ("img/a", b"img/a"),
        ("img/b", b"img/b"),
        ("imgs/c", b"imgs/c"),
    ]

    everything = await h.obj.ListObjects(opb.ListObjectsRequest())
    assert [o.key for o in everything.objects] == ["doc/x", "img", "img/a", "img/b", "imgs/c"]
    after = await h.obj.ListObjects(opb.ListObjectsRequest(prefix="img", start_after="img/a"))
    assert [o.key for o in after.objects] == ["img/b", "imgs/c"]
    none = await h.obj.ListObjects(opb.ListObjectsRequest(prefix="zzz"))
    assert (list(none.objects), none.has_more, none.next_start_after) == ([], False, "")


async def test_list_objects_pagination(make_harness: HarnessFactory) -> None:
    h = await harness(make_harness)
    keys = [f"page/{i:04d}" for i in range(250)]
    for key in reversed(keys):  # stored out of order: the listing orders them
        await put(h, key, b"v")
    await put(h, "other/1", b"v")

    pages = await list_all(h, "page/", 100)
    assert [len(p.objects) for p in pages] == [100, 100, 50]
    assert [p.has_more for p in pages] == [True, True, False]
    assert [p.next_start_after for p in pages] == [keys[99], keys[199], ""]
    assert [o.key for p in pages for o in p.objects] == keys

    # A page that ends exactly at the last object says there is no more.
    exact = await h.obj.ListObjects(opb.ListObjectsRequest(prefix="page/", limit=50, start_after=keys[199]))
    assert [o.key for o in exact.objects] == keys[200:]
    assert (exact.has_more, exact.next_start_after) == (False, "")

    default = await h.obj.ListObjects(opb.ListObjectsRequest(prefix="page/", limit=0))
    assert [o.key for o in default.objects] == keys[:100], "limit 0 means 100"
    assert (default.has_more, default.next_start_after) == (True, keys[99])

    await expect_code(
        h.obj.ListObjects(opb.ListObjectsRequest(prefix="page/", limit=-1)),
        grpc.StatusCode.INVALID_ARGUMENT,
    )


async def test_list_objects_limit_is_capped_at_1000(make_harness: HarnessFactory) -> None:
    h = await harness(make_harness)
    keys = [f"cap/{i:05d}" for i in range(1003)]
    for key in keys:
        await put(h, key, b"")
    big = await h.obj.ListObjects(opb.ListObjectsRequest(prefix="cap/", limit=5000))
    assert [o.key for o in big.objects] == keys[:1000]
    assert (big.has_more, big.next_start_after) == (True, keys[999])
    rest = await h.obj.ListObjects(
        opb.ListObjectsRequest(prefix="cap/", limit=5000, start_after=big.next_start_after)
    )
    assert [o.key for o in rest.objects] == keys[1000:]
    assert (rest.has_more, rest.next_start_after) == (False, "")


async def test_a_page_of_values_ends_early_rather_than_outgrow_the_message_limit(
    make_harness: HarnessFactory,
) -> None:
    h = await harness(make_harness, max_object_bytes=64 << 10, max_message_bytes=256 << 10)
    values = {f"big/{i:02d}": bytes([i]) * (60 << 10) for i in range(10)}
    for key, data in values.items():
        await put(h, key, data)
    seen: dict[str, bytes] = {}
    pages, after = 0, ""
    while True:
        page = await h.obj.ListObjects(opb.ListObjectsRequest(include_values=True, start_after=after))
        pages += 1
        assert page.objects and page.ByteSize() <= 256 << 10
        seen.update((o.key, o.value) for o in page.objects)
        if not page.has_more:
            break
        assert page.next_start_after == page.objects[-1].key
        after = page.next_start_after
    assert seen == values
    assert pages >= 3


# -- health figures ---------------------------------------------------------------------------------


async def test_health_details_track_object_count_and_size(make_harness: HarnessFactory) -> None:
    h = await harness(make_harness)

    async def figures() -> tuple[int, int]:
        health = await h.fn.GetHealth(fpb.GetHealthRequest(include_details=True))
        return health.details.object_count, health.details.total_object_size

    assert await figures() == (0, 0)
    await put(h, "a", b"x" * 100)
    await put(h, "b", b"x" * 50)
    assert await figures() == (2, 150)
    await put(h, "a", b"x" * 10, overwrite=True)
    assert await figures() == (2, 60)
    await expect_code(put(h, "b", b"x" * 999), grpc.StatusCode.ALREADY_EXISTS)
    assert await figures() == (2, 60)
    await h.obj.DeleteObject(opb.DeleteObjectRequest(key="b"))
    assert await figures() == (1, 10)
    await h.obj.RemoveObjectRef(opb.RemoveObjectRefRequest(key="a"))
    assert await figures() == (0, 0)
    await put(h, "c", b"x" * 7)
    await h.obj.PinObject(opb.PinObjectRequest(key="c"))
    await h.obj.RemoveObjectRef(opb.RemoveObjectRefRequest(key="c"))
    assert await figures() == (1, 7)
    await h.obj.UnpinObject(opb.UnpinObjectRequest(key="c"))
    assert await figures() == (0, 0)
