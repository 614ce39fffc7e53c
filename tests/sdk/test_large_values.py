"""Large values by reference: ``client.put`` and ``ObjectRef``, arguments, results and stream chunks past
the inline limit, the same-machine files and the streamed transfer, lifetimes, and the limits' errors."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pandas as pd
import pytest
from dask_cluster import DaskCluster
from sdk_support import LAB_OPTIONS, wait_until
from spearlet.blobs import ObjectFiles, file_name

import spear_sdk
from spear_sdk.errors import ExecutionError, InvalidArgument, NotFound
from spear_sdk.wire import codec, function_pb2, function_pb2_grpc

MIB = 1 << 20


def frame(rows: int) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    return pd.DataFrame(
        {
            "x": rng.random(rows),
            "n": np.arange(rows, dtype=np.int64),
            "s": [f"row {i}" for i in range(rows)],
            "t": pd.date_range("2024-01-01", periods=rows, freq="s"),
            "c": pd.Categorical(["a", "b", "c"] * (rows // 3) + ["a"] * (rows % 3)),
        }
    )


def object_totals(client: spear_sdk.Client) -> tuple[int, int]:
    """(count, bytes) of the objects that hold values (function payloads aside)."""
    objects = client.objects(prefix="spear/")
    values = objects[~objects["key"].str.startswith("spear/functions/")]
    return len(values), int(values["size"].sum())


@pytest.fixture
def short_grace() -> Iterator[spear_sdk.Lab]:
    """A lab whose result objects go 0.2 s after they were fetched."""
    lab = spear_sdk.start_lab(**LAB_OPTIONS, object_grace_s=0.2)
    yield lab
    lab.stop(0)


# -- put and ObjectRef --------------------------------------------------------------------------------


def test_put_get_delete_round_trips_arrays_and_frames_exactly(client: spear_sdk.Client) -> None:
    array = np.random.default_rng(1).random((1000, 700))
    df = frame(50_000)
    array_ref, frame_ref = client.put(array), client.put(df)
    assert isinstance(array_ref, spear_sdk.ObjectRef)
    assert array_ref.size_bytes >= array.nbytes
    assert "numpy.ndarray" in repr(array_ref) and "MiB" in repr(array_ref)
    assert "pandas.DataFrame" in repr(frame_ref)
    back = array_ref.get()
    assert back.dtype == array.dtype and back.shape == array.shape and np.array_equal(back, array)
    back[0, 0] = -1.0  # a private copy: changing it changes nothing stored
    assert array_ref.get()[0, 0] == array[0, 0]
    pd.testing.assert_frame_equal(frame_ref.get(), df)
    listed = set(client.objects(prefix="spear/put/")["key"])
    assert {array_ref.key, frame_ref.key} <= listed
    array_ref.delete()
    frame_ref.delete()
    assert not {array_ref.key, frame_ref.key} & set(client.objects(prefix="spear/put/")["key"])
    with pytest.raises(NotFound, match=array_ref.key):
        array_ref.get()


def test_a_ref_reaches_the_function_as_the_value_at_any_depth(client: spear_sdk.Client) -> None:
    array = np.arange(300_000, dtype=np.int32)
    ref = client.put(array)

    @client.function
    def describe(a: Any, *rest: Any, k: Any = None, inside: Any = None) -> list[Any]:
        found = [a, *rest, k, *inside["list"], *inside["tuple"], inside["dict"]["deep"]]
        return [(type(x).__name__, int(x.sum())) for x in found]

    expected = ("ndarray", int(array.sum()))
    got = describe(ref, ref, k=ref, inside={"list": [ref], "tuple": (ref,), "dict": {"deep": ref}})
    assert got == [expected] * 6
    ref.delete()


def test_five_calls_with_one_ref_open_it_once_per_worker() -> None:
    lab = spear_sdk.start_lab(max_concurrent=1)
    try:
        client = lab.client
        ref = client.put(np.ones(2 * MIB))

        @client.function
        def opened(a: Any) -> int:
            from spearlet.engine.executors import object_cache

            assert a.sum() == 2 * MIB
            return object_cache.CACHE.opened

        counts = [opened(ref) for _ in range(5)]
        assert counts == [counts[0]] * 5
    finally:
        lab.stop(0)


def test_async_client_puts_gets_and_deletes(lab: spear_sdk.Lab) -> None:
    async def main() -> None:
        async with spear_sdk.AsyncClient(lab.address) as client:
            array = np.linspace(0, 1, 500_000)
            ref = await client.put(array)
            assert isinstance(ref, spear_sdk.AsyncObjectRef)
            assert np.array_equal(await ref.get(), array)
            total = client.function(lambda a: float(a.sum()), name="async-total")
            assert await total(ref) == float(array.sum())
            await ref.delete()
            with pytest.raises(NotFound):
                await ref.get()

    asyncio.run(main())


# -- automatic references -----------------------------------------------------------------------------


def test_large_arguments_results_and_chunks_travel_by_reference(short_grace: spear_sdk.Lab) -> None:
    client = short_grace.client
    before = object_totals(client)
    array = np.random.default_rng(2).random(3 * MIB // 8 * 8)
    df = frame(100_000)

    @client.function
    def echo(value: Any) -> Any:
        return value

    back = echo(array)
    assert np.array_equal(back, array)
    pd.testing.assert_frame_equal(echo(df), df)
    assert echo(list(range(400_000))) == list(range(400_000))  # a large plain container too

    @client.function
    def chunks(n: int) -> Iterator[Any]:
        for i in range(n):
            yield np.full(MIB, i, dtype=np.float32)  # 4 MiB each

    assert [int(c[0]) for c in chunks.stream(5)] == [0, 1, 2, 3, 4]
    execution = echo.submit(array)
    assert np.array_equal(execution.result(), array)
    # Arguments go when their call ends; results a grace period after they were fetched.
    wait_until(lambda: object_totals(client) == before, what="objects back to where they were")


def test_a_thousand_calls_with_10_mb_arguments_leak_nothing(client: spear_sdk.Client) -> None:
    array = np.ones(10_000_000 // 8)

    @client.function
    def first(a: Any) -> float:
        return float(a[0])

    first(array)  # warm
    before = object_totals(client)
    started = time.perf_counter()
    for _ in range(1000):
        assert first(array) == 1.0
    elapsed = time.perf_counter() - started
    assert object_totals(client) == before, f"objects left after 1000 calls ({elapsed:.1f} s)"
    health = client.health()
    assert health.object_count == len(client.objects())


def test_map_with_large_arguments_releases_them(client: spear_sdk.Client) -> None:
    before = object_totals(client)
    arrays = [np.full(300_000, i, dtype=np.float64) for i in range(6)]  # 2.3 MiB each
    first = client.function(lambda a: float(a[0]), name="first-of-map")
    assert first.map(arrays, progress=False) == [float(i) for i in range(6)]
    assert object_totals(client) == before


def test_deleting_an_executions_records_deletes_its_result_objects(client: spear_sdk.Client) -> None:
    make = client.function(lambda n: np.ones(n), name="make-big")
    execution = make.submit(MIB)
    execution.info()
    wait_until(execution.done, what="the execution to end")
    results = client.objects(prefix=f"spear/results/{execution.execution_id}/")
    assert len(results) == 1  # never fetched: it waits for its caller
    client.delete_task("make-big", cleanup_executions=True)
    assert client.objects(prefix=f"spear/results/{execution.execution_id}/").empty


# -- the streamed transfer (a client that does not share the server's files) --------------------------


def test_a_client_on_another_machine_moves_objects_in_chunks(lab: spear_sdk.Lab) -> None:
    info = lab.client._core.transfer
    assert lab.client._runtime.run(info.local()) is not None
    host_file = Path(lab.client._runtime.run(info.local()).root) / ".spear-host"  # type: ignore[union-attr]
    token = host_file.read_text()
    host_file.write_text("another machine's token")  # the same path, seen from elsewhere
    try:
        remote = spear_sdk.Client(lab.address)
        assert remote._runtime.run(remote._core.transfer.local()) is None
        array = np.random.default_rng(3).random(25 * MIB // 8)  # 25 MiB: 25 chunks each way
        ref = remote.put(array)
        assert np.array_equal(ref.get(), array)
        echo = remote.function(lambda a: a, name="remote-echo")
        assert np.array_equal(echo(ref), array)
        assert np.array_equal(echo(array), array)
        df = frame(200_000)
        pd.testing.assert_frame_equal(echo(df), df)
        ref.delete()
        remote.close()
    finally:
        host_file.write_text(token)


# -- reusing freed memory ------------------------------------------------------------------------------


@pytest.fixture
def fresh_lab() -> spear_sdk.Lab:
    """A lab of its own (its object directory empty): the running one stopped and started again."""
    spear_sdk.start_lab(**LAB_OPTIONS).stop(0)
    return spear_sdk.start_lab(**LAB_OPTIONS)


def _free_files(client: spear_sdk.Client) -> list[Path]:
    local = client._runtime.run(client._core.transfer.local())
    assert local is not None
    return sorted((local.root / "free").iterdir())


def test_a_deleted_objects_memory_is_reused_but_never_under_a_value_using_it(
    fresh_lab: spear_sdk.Lab,
) -> None:
    client = fresh_lab.client
    first = np.full(4 * MIB // 8, 1.0)
    ref = client.put(first)
    held = ref.get()  # points into the object's file
    ref.delete()
    assert len(_free_files(client)) == 1  # kept for reuse
    second = client.put(np.full(4 * MIB // 8, 2.0))
    assert np.array_equal(held, first)  # still mapped here: not written over
    assert len(_free_files(client)) == 1
    del held
    third = client.put(np.full(4 * MIB // 8, 3.0))
    assert _free_files(client) == []  # nobody maps it any more: reused
    assert np.array_equal(second.get(), np.full(4 * MIB // 8, 2.0))
    assert np.array_equal(third.get(), np.full(4 * MIB // 8, 3.0))
    total = client.function(lambda a: float(a.sum()), name="reused-total")
    assert total(third) == 3.0 * (4 * MIB // 8)


def test_a_reused_file_longer_than_the_object_holds_exactly_the_object(fresh_lab: spear_sdk.Lab) -> None:
    client = fresh_lab.client
    client.put(np.zeros(6 * MIB // 8)).delete()
    assert [f.stat().st_size >= 6 * MIB for f in _free_files(client)] == [True]
    small = np.arange(4 * MIB // 8, dtype=np.float64)
    ref = client.put(small)  # written into the 6 MiB file
    assert _free_files(client) == []
    listed = client.objects(prefix=ref.key)
    assert list(listed["size"]) == [ref.size_bytes]
    assert np.array_equal(ref.get(), small)
    echo = client.function(lambda a: a, name="reused-echo")
    assert np.array_equal(echo(ref), small)
    ref.delete()


def test_a_calls_large_result_goes_with_its_value_its_memory_serves_the_next(
    fresh_lab: spear_sdk.Lab,
) -> None:
    client = fresh_lab.client
    make = client.function(lambda n, v: np.full(n, v), name="result-make")

    def results() -> list[str]:
        return list(client.objects(prefix="spear/results/")["key"])

    first = make(3 * MIB // 8, 1.0)
    assert np.array_equal(first, np.full(3 * MIB // 8, 1.0))
    (key,) = results()  # held while the value lives
    del first
    # The record goes first, then the file moves to free/.
    wait_until(
        lambda: not results() and _free_files(client), what="the result object released with its value"
    )
    (freed,) = _free_files(client)
    root = freed.parent.parent
    inode = freed.stat().st_ino
    second = make(3 * MIB // 8, 2.0)
    assert np.array_equal(second, np.full(3 * MIB // 8, 2.0))
    (key,) = results()
    assert (root / "objects" / file_name(key)).stat().st_ino == inode  # the first result's memory
    assert np.array_equal(second, np.full(3 * MIB // 8, 2.0))


def test_a_killed_servers_temporary_objects_are_removed_by_the_next_one() -> None:
    code = (
        "import sys, time\n"
        "from spearlet.blobs import ObjectFiles\n"
        "print(ObjectFiles.for_store('memory://').root, flush=True)\n"
        "time.sleep(120)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    abandoned = Path(child.stdout.readline().strip())
    (abandoned / "objects" / "some-object").write_bytes(b"x" * 1000)
    child.kill()
    child.wait()
    unowned = Path(tempfile.mkdtemp(prefix="spearlet-objects-", dir=abandoned.parent))
    files = ObjectFiles.for_store("memory://")
    try:
        assert not abandoned.exists()
        assert unowned.exists()  # nothing says whose it is: left alone
        assert files.root.exists() and files.root != abandoned
        again = ObjectFiles.for_store("memory://")
        assert files.root.exists()  # its owner (this process) is running
        again.close()
    finally:
        files.close()
        shutil.rmtree(unowned)


# -- limits and errors --------------------------------------------------------------------------------


def test_over_max_object_bytes_is_invalid_argument_naming_the_option() -> None:
    lab = spear_sdk.start_lab(**LAB_OPTIONS, max_object_bytes=4 * MIB)
    try:
        client = lab.client
        with pytest.raises(InvalidArgument, match=r"4194304 bytes.*--max-object-bytes"):
            client.put(np.ones(MIB))  # 8 MiB
        grow = client.function(lambda n: np.ones(n), name="grow")
        with pytest.raises(ExecutionError, match="--max-object-bytes") as caught:
            grow(MIB)
        assert caught.value.error_code == "RESULT_TOO_LARGE"
        state = client.execution(caught.value.execution_id).info()
        assert state.status == "failed" and state.error_code == "RESULT_TOO_LARGE"
        stream = client.function(lambda: (np.ones(MIB) for _ in range(2)), name="grow-stream")
        with pytest.raises(ExecutionError, match="--max-object-bytes") as caught:
            list(stream.stream())
        assert caught.value.error_code == "RESULT_TOO_LARGE"
    finally:
        lab.stop(0)


def test_a_result_too_large_for_a_json_caller_fails_never_completes() -> None:
    lab = spear_sdk.start_lab(**LAB_OPTIONS, max_message_bytes=4 * MIB)
    try:
        lab.client.function(lambda n: [0.5] * n, name="floats")
        channel = grpc.insecure_channel(lab.address)
        stub = function_pb2_grpc.FunctionServiceStub(channel)
        request = function_pb2.InvokeFunctionRequest(
            task_name="floats",
            invocation_type=function_pb2.INVOCATION_TYPE_EXISTING_TASK,
            parameters=[function_pb2.FunctionParameter(value=codec.encode(1_000_000))],
        )
        request.task_id = lab.client.task("floats").register().task_id
        response = stub.InvokeFunction(request)
        assert not response.success
        assert response.result.status == function_pb2.EXECUTION_STATUS_FAILED
        assert response.result.error_code == "RESULT_TOO_LARGE"
        # A Python caller gets the same value by reference.
        assert lab.client.task("floats")(1_000_000) == [0.5] * 1_000_000
        channel.close()
    finally:
        lab.stop(0)


def test_an_argument_naming_a_deleted_object_is_refused(client: spear_sdk.Client) -> None:
    ref = client.put(np.ones(10))
    ref.delete()
    total = client.function(lambda a: float(a.sum()), name="total-of-deleted")
    with pytest.raises(InvalidArgument, match="does not exist"):
        total(ref)


def test_the_thread_executor_reads_and_writes_values_by_reference() -> None:
    lab = spear_sdk.start_lab(max_concurrent=4, executor="thread")
    try:
        client = lab.client
        array = np.arange(MIB, dtype=np.float64)  # 8 MiB
        ref = client.put(array)
        twice = client.function(lambda a, b: np.concatenate([a, b]), name="twice")
        executions = [twice.submit(ref, array) for _ in range(4)]  # decoded in threads at once
        for execution in executions:
            assert np.array_equal(execution.result(), np.concatenate([array, array]))
        ref.delete()
    finally:
        lab.stop(0)


def test_a_dask_cluster_on_this_machine_reads_and_writes_values_by_reference(
    dask_cluster: DaskCluster,
) -> None:
    lab = spear_sdk.start_lab(executor="dask", dask_address=dask_cluster.address)
    try:
        client = lab.client
        array = np.arange(MIB, dtype=np.float64)  # 8 MiB
        ref = client.put(array)
        twice = client.function(lambda a, b: np.concatenate([a, b]), name="twice")
        assert np.array_equal(twice(ref, array), np.concatenate([array, array]))

        @client.function
        def chunks(n: int) -> Iterator[Any]:
            for i in range(n):
                yield np.full(MIB, i, dtype=np.float32)  # 4 MiB each

        assert [int(c[0]) for c in chunks.stream(3)] == [0, 1, 2]
        assert set(client.executions()["instance_id"]) <= {"dask-w1", "dask-w2"}
        ref.delete()
    finally:
        lab.stop(0)


def test_argument_objects_a_previous_server_left_are_deleted_at_start(tmp_path: Path) -> None:
    store = {"store": f"sqlite:///{tmp_path / 'lab.db'}", "max_concurrent": 1}
    lab = spear_sdk.start_lab(**store)
    try:
        transfer = lab.client._core.transfer
        kept = lab.client.put(np.ones(MIB))
        left = lab.client._runtime.run(transfer.put(np.ones(MIB), implicit=True))  # a call never sent
    finally:
        lab.stop(0)
    again = spear_sdk.start_lab(**store, max_queued=99)  # the same store, a new server
    try:
        keys = set(again.client.objects(prefix="spear/")["key"])
        assert kept.key in keys and left.key not in keys
        assert np.array_equal(again.client.put(np.ones(3)).get(), np.ones(3))
    finally:
        again.stop(0)
