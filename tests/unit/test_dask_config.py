"""Choosing the Dask executor: flags, environment, start_lab options, and what is refused."""

from __future__ import annotations

import os

import pytest
from spearlet.cli import _parser, config_from_args
from spearlet.config import Config

from spear_sdk.lab import lab_config


def test_flags_and_environment_choose_the_cluster() -> None:
    args = _parser().parse_args(["serve", "--executor", "dask", "--dask-address", "tcp://10.0.0.5:8786"])
    config = config_from_args(args)
    assert (config.executor, config.dask_address) == ("dask", "tcp://10.0.0.5:8786")
    assert config.max_concurrent is None  # the cluster's slots, once connected
    env = Config.from_env({"SPEARLET_EXECUTOR": "dask", "SPEARLET_DASK_ADDRESS": "tcp://127.0.0.1:8786"})
    assert env.dask_address == "tcp://127.0.0.1:8786"
    assert Config.from_env({"SPEARLET_EXECUTOR": "dask", "SPEARLET_MAX_CONCURRENT": "6"}).max_concurrent == 6
    assert lab_config({"executor": "dask", "dask_address": "tcp://h:1"}).dask_address == "tcp://h:1"


def test_other_executors_keep_their_defaults() -> None:
    assert Config().max_concurrent == (os.cpu_count() or 1)
    assert Config(executor="thread").executor_options() == {}
    assert Config(executor="dask", dask_address="tcp://h:1").executor_options() == {"address": "tcp://h:1"}


def test_refused_settings_say_what_to_change() -> None:
    with pytest.raises(ValueError, match="dask_address needs executor='dask'"):
        Config(dask_address="tcp://h:1")
    with pytest.raises(ValueError, match="one of process, thread, dask"):
        Config(executor="ray")
    with pytest.raises(SystemExit):
        _parser().parse_args(["serve", "--executor", "ray"])
