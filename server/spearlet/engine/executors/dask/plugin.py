"""The WorkerPlugin that stops a cancelled call: Dask leaves a cancelled task's thread running.

When one of our tasks leaves ``executing`` for ``released`` or ``cancelled`` (its future was cancelled, or
the spearlet that wanted it went away), the plugin kills the task's child process (:func:`.runner.kill`);
the thread then ends at once and the worker's slot is free for the next task.
"""

from __future__ import annotations

from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

from spearlet.engine.executors.dask import runner

PLUGIN_NAME = "spearlet"
_RUNNING = ("executing", "long-running")
_STOPPED = ("released", "cancelled", "forgotten")


class SpearletPlugin(WorkerPlugin):
    name = PLUGIN_NAME

    def setup(self, worker: Any) -> None:
        self.worker = worker

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        if (
            start in _RUNNING
            and finish in _STOPPED
            and isinstance(key, str)
            and key.startswith(runner.KEY_PREFIX)
        ):
            runner.kill(key)

    def teardown(self, worker: Any) -> None:
        runner.kill_all()
