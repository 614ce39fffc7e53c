"""start_lab() checks every option before it replaces a running lab; one server per SQLite store."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from sdk_support import LAB_OPTIONS

import spear_sdk
from spear_sdk import errors


@pytest.mark.parametrize(
    ("options", "error", "names"),
    [
        ({"store": "mysql://x"}, ValueError, r"unsupported store URL 'mysql://x'"),
        ({"store": "sqlite:///"}, ValueError, r"malformed sqlite URL"),
        ({"host": "999.1.1.1"}, ValueError, r"host '999\.1\.1\.1'"),
        ({"tls_cert": "/no/such/cert.pem", "tls_key": "/no/such/key.pem"}, ValueError, r"tls_cert '/no/such"),
        ({"port": 99999}, ValueError, r"port must be 0 \(any free port\) to 65535, not 99999"),
        ({"port": "abc"}, TypeError, r"port must be int, not str 'abc'"),
        ({"max_concurrent": "4"}, TypeError, r"max_concurrent must be int or None, not str '4'"),
        ({"shutdown_grace_s": "1"}, TypeError, r"shutdown_grace_s must be int or float, not str '1'"),
    ],
)
def test_a_bad_option_leaves_the_running_lab_alone(
    lab: spear_sdk.Lab, options: dict[str, object], error: type[Exception], names: str
) -> None:
    square = lab.client.function(lambda x: x * x, name="square-kept")
    with pytest.raises(error, match=names):
        spear_sdk.start_lab(**{**LAB_OPTIONS, **options})
    assert lab.running and square(3) == 9  # the lab and its handles are alive
    assert spear_sdk.start_lab(**LAB_OPTIONS) is lab


def test_a_port_in_use_leaves_the_running_lab_alone(lab: spear_sdk.Lab) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=str(port)):
            spear_sdk.start_lab(**LAB_OPTIONS, port=port)
    assert lab.running and lab.client.health().healthy


def test_one_server_per_sqlite_store(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    url = f"sqlite:///{db}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPEARLET_")}
    other = subprocess.Popen(
        [sys.executable, "-m", "spearlet", "serve", "--port", "0", "--store", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        assert other.stdout is not None
        line = other.stdout.readline()
        assert "listening" in line, line
        with pytest.raises(errors.StoreInUse, match=rf"process {other.pid}\b") as caught:
            spear_sdk.start_lab(store=url)
        assert caught.value.pid == other.pid
    finally:
        other.terminate()
        other.wait(10)
    lab = spear_sdk.start_lab(store=url)  # free again once that server is gone
    try:
        assert lab.client.health().healthy
        with pytest.raises(errors.StoreInUse, match=re.escape(str(db))):
            # a second server on the same store, in the same process, is refused too
            from spearlet.store import open_store

            open_store(url)
    finally:
        lab.stop(0)
