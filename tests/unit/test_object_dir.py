"""Writing objects into freed files: a writer keeps the files it reused mapped, writes into them again
through that mapping, and never while anybody else maps them."""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import numpy as np
import pytest

from spear_sdk.wire import blob, object_dir

MIB = 1 << 20


@pytest.fixture
def root(tmp_path: Path) -> Path:
    for folder in (object_dir.INCOMING, object_dir.OBJECTS, object_dir.FREE):
        (tmp_path / folder).mkdir()
    return tmp_path


def free(root: Path, path: Path) -> Path:
    """What the server does when an object is deleted: its file goes to ``free/``."""
    freed = root / object_dir.FREE / path.name
    os.replace(path, freed)
    return freed


def value(fill: float) -> np.ndarray:
    return np.full(2 * MIB // 8, fill)


def write(root: Path, kept: object_dir.KeptFiles, data: np.ndarray, name: str) -> Path | None:
    """Write ``data`` as ``incoming/{name}`` into a free file, as ``write_object`` does; None when no free
    file could be claimed."""
    laid_out = blob.dumps(data)
    target = root / object_dir.INCOMING / name
    if not object_dir.claim_free(root, laid_out.size, target, kept.writable, prefer=kept.inodes()):
        return None
    kept.write_over(target, laid_out)
    return target


def read(path: Path) -> object:
    return blob.loads(path.read_bytes())


def test_a_reused_file_is_kept_mapped_and_the_next_write_goes_through_that_mapping(root: Path) -> None:
    kept = object_dir.KeptFiles()
    first = root / object_dir.INCOMING / "first"
    blob.dumps(value(1.0)).write_new_file(first)
    inode = free(root, first).stat().st_ino
    assert kept.held == 0

    second = write(root, kept, value(2.0), "second")
    assert second is not None and second.stat().st_ino == inode
    assert kept.inodes() == {inode} and kept.held == second.stat().st_size
    assert np.array_equal(read(second), value(2.0))  # type: ignore[arg-type]

    free(root, second)
    third = write(root, kept, value(3.0), "third")
    assert third is not None and third.stat().st_ino == inode
    assert np.array_equal(read(third), value(3.0))  # type: ignore[arg-type]
    assert kept.inodes() == {inode}
    kept.release()
    assert kept.held == 0


def test_a_kept_file_someone_maps_is_not_written_over(root: Path) -> None:
    kept = object_dir.KeptFiles()
    first = root / object_dir.INCOMING / "first"
    blob.dumps(value(1.0)).write_new_file(first)
    free(root, first)
    second = write(root, kept, value(2.0), "second")
    assert second is not None
    with open(second, "rb") as f:
        reader = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)  # a value still using the object
    held = blob.loads(reader)
    inode = free(root, second).stat().st_ino

    assert write(root, kept, value(3.0), "third") is None  # refused, and the file left in free/
    assert [p.stat().st_ino for p in (root / object_dir.FREE).iterdir()] == [inode]
    assert np.array_equal(held, value(2.0))  # type: ignore[arg-type]

    del held
    reader.close()
    fourth = write(root, kept, value(4.0), "fourth")
    assert fourth is not None and fourth.stat().st_ino == inode
    assert np.array_equal(read(fourth), value(4.0))  # type: ignore[arg-type]
    kept.release()


def test_a_file_another_writer_keeps_is_not_claimed(root: Path) -> None:
    keeper, other = object_dir.KeptFiles(), object_dir.KeptFiles()
    first = root / object_dir.INCOMING / "first"
    blob.dumps(value(1.0)).write_new_file(first)
    free(root, first)
    second = write(root, keeper, value(2.0), "second")
    assert second is not None
    free(root, second)
    assert write(root, other, value(3.0), "third") is None  # the keeper's descriptor is open
    keeper.release()
    assert write(root, other, value(3.0), "third") is not None
    other.release()


def test_deleted_and_idle_files_are_let_go(root: Path) -> None:
    kept = object_dir.KeptFiles(idle_s=3600)
    first = root / object_dir.INCOMING / "first"
    blob.dumps(value(1.0)).write_new_file(first)
    free(root, first)
    second = write(root, kept, value(2.0), "second")
    assert second is not None and kept.held > 0
    kept.release(idle_for=3600)
    assert kept.held > 0  # used just now, and still there
    second.unlink()  # the server trimmed it: a mapping would keep its memory
    kept.release(idle_for=3600)
    assert kept.held == 0 and kept.inodes() == frozenset()


def test_the_budget_bounds_what_is_kept(root: Path) -> None:
    for name in ("a", "b"):
        path = root / object_dir.INCOMING / name
        blob.dumps(value(0.0)).write_new_file(path)
        free(root, path)
    size = next((root / object_dir.FREE).iterdir()).stat().st_size
    kept = object_dir.KeptFiles(budget=size)
    one = write(root, kept, value(1.0), "one")
    two = write(root, kept, value(2.0), "two")
    assert one is not None and two is not None
    assert kept.held == size and kept.inodes() == {two.stat().st_ino}  # the older one let go
    assert np.array_equal(read(one), value(1.0)) and np.array_equal(read(two), value(2.0))  # type: ignore[arg-type]

    small = object_dir.KeptFiles(budget=size - 1)
    free(root, one)
    three = write(root, small, value(3.0), "three")  # written, but too large to keep
    assert three is not None and small.held == 0
    assert np.array_equal(read(three), value(3.0))  # type: ignore[arg-type]
    kept.release()


def test_a_forked_child_lets_go_of_its_parents_kept_files(root: Path) -> None:
    first = root / object_dir.INCOMING / "first"
    blob.dumps(value(1.0)).write_new_file(first)
    free(root, first)
    kept = object_dir.KEPT
    second = write(root, kept, value(2.0), "second")
    assert second is not None and second.stat().st_ino in kept.inodes()
    free(root, second)
    pid = os.fork()
    if pid == 0:  # the child: holds nothing of the parent's, so the parent may write into the file
        os._exit(0 if object_dir.KEPT.held == 0 and not object_dir.KEPT.inodes() else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    third = write(root, kept, value(3.0), "third")
    assert third is not None and np.array_equal(read(third), value(3.0))  # type: ignore[arg-type]
    kept.release()
