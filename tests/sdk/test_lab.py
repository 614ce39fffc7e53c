"""start_lab(): safe to re-run, replaced when its options change, reachable by every client kind."""

from __future__ import annotations

import asyncio

import pytest
import trustme
from sdk_support import LAB_OPTIONS

import spear_sdk
from spear_sdk.errors import Unauthenticated, Unavailable


def test_rerunning_start_lab_returns_the_running_lab(lab: spear_sdk.Lab) -> None:
    assert spear_sdk.start_lab(**LAB_OPTIONS) is lab
    assert lab.running and lab.config.store == "memory://" and lab.config.port == 0
    assert lab.client.health().healthy


def test_changed_options_replace_the_lab_cleanly(lab: spear_sdk.Lab) -> None:
    first = spear_sdk.start_lab(max_concurrent=1)
    assert first is not lab and not lab.running  # one lab per kernel: the old one stopped
    assert first.client.function(lambda: "first", name="which")() == "first"
    second = spear_sdk.start_lab(max_concurrent=1, max_queued=5)
    assert not first.running and second.running
    with pytest.raises(Unavailable, match="cannot reach the spearlet"):
        first.client.health()
    assert second.client.tasks().empty  # a memory store starts empty
    second.stop()
    assert not second.running
    assert spear_sdk.start_lab(max_concurrent=1, max_queued=5) is not second  # a stopped lab is not reused


def test_unknown_and_invalid_options_are_clear() -> None:
    with pytest.raises(TypeError, match=r"unknown option 'prot'.*port"):
        spear_sdk.start_lab(prot=0)
    with pytest.raises(ValueError, match="executor"):
        spear_sdk.start_lab(executor="gpu")


def test_lab_with_token_and_tls(tmp_path: object) -> None:
    authority = trustme.CA()
    cert = authority.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file, ca_file = (f"{tmp_path}/{n}.pem" for n in ("cert", "key", "ca"))
    cert.cert_chain_pems[0].write_to_path(cert_file)
    cert.private_key_pem.write_to_path(key_file)
    authority.cert_pem.write_to_path(ca_file)
    secure = spear_sdk.start_lab(token="s3cret", tls_cert=cert_file, tls_key=key_file)
    try:
        assert secure.client.function(lambda x: x + 1, name="inc")(1) == 2
        connected = spear_sdk.connect(secure.address, token="s3cret", tls=ca_file)
        assert connected.invoke("inc", 41) == 42
        with pytest.raises(Unauthenticated):
            spear_sdk.connect(secure.address, token="wrong", tls=ca_file)
        with pytest.raises(Unavailable):
            spear_sdk.connect(secure.address, token="s3cret")  # plaintext to a TLS port
        assert "token=on" in repr(connected) and "tls=on" in repr(connected)
    finally:
        secure.stop()


def test_async_client_serves_a_lab(lab: spear_sdk.Lab) -> None:
    async def main() -> str:
        async with spear_sdk.AsyncClient(lab.address) as aclient:
            return (await aclient.health()).status

    assert asyncio.run(main()) == "healthy"


def test_connect_to_nothing_is_unavailable() -> None:
    with pytest.raises(Unavailable, match=r"127\.0\.0\.1:1\b"):
        spear_sdk.connect("127.0.0.1:1")
