"""start_lab(store="postgresql://...") beside a ``spearlet serve`` on the same database: the notebook's
functions run on the other server, and an execution submitted through one is awaited through the other."""

from __future__ import annotations

import subprocess
import sys

import pytest
from sdk_support import LAB_OPTIONS, wait_until

import spear_sdk


@pytest.fixture
def other_server(pg_url: str, tmp_path: object) -> object:
    proc = subprocess.Popen(
        [sys.executable, "-m", "spearlet", "serve", "--port", "0", "--store", pg_url],
        stdout=subprocess.PIPE,
        text=True,
        cwd=str(tmp_path),
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "spearlet listening on ADDRESS (...)" once it serves
        assert line.startswith("spearlet listening on "), line
        yield line.split()[3]
    finally:
        proc.kill()
        proc.wait()


def test_lab_and_server_on_one_database(pg_url: str, other_server: str) -> None:
    lab = spear_sdk.start_lab(store=pg_url, max_concurrent=2)
    try:
        assert lab.config.store == pg_url
        square = lab.client.function(lambda x: x * x, name="square-shared")
        assert square(7) == 49
        other = spear_sdk.connect(other_server)
        try:
            assert other.invoke("square-shared", 8) == 64  # registered through the lab, run on the other
            submitted = other.submit("square-shared", 9)
            assert lab.client.execution(submitted.execution_id).result(timeout=30) == 81
            wait_until(lambda: lab.client.stats().total_executions == 3, what="shared figures")
            assert len(other.executions(task="square-shared")) == 3
        finally:
            other.close()
    finally:
        lab.stop(0)
        spear_sdk.start_lab(**LAB_OPTIONS)  # the other SDK tests' lab
