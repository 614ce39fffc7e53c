"""``start_lab()``: a spearlet inside this interpreter (a notebook kernel), on the SDK's runtime loop.

Safe to re-run: the same options return the running lab, changed options replace it, and it shuts down at
interpreter exit.
"""

from __future__ import annotations

import contextvars
import dataclasses
import threading
from typing import TYPE_CHECKING, Any

from . import _repr
from ._local_channel import LocalChannel
from ._runtime import Runtime, get_runtime
from .client import Client
from .wire import object_dir

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from spearlet.app import SpearletServer
    from spearlet.config import Config

    from .alerts import Alert, Breach
    from .widgets.panel import Panel

#: What a lab uses unless told otherwise: any free port, and nothing kept after the kernel ends.
LAB_DEFAULTS: dict[str, Any] = {"port": 0, "store": "memory://"}
#: At interpreter exit running work gets this long (at most) before it is cancelled.
EXIT_GRACE_S = 1.0


class Lab:
    """A running in-process spearlet: ``.client`` talks to it, ``.address`` reaches it, ``.stop()``
    ends it."""

    def __init__(
        self, server: SpearletServer, context: contextvars.Context, config: Config, runtime: Runtime
    ) -> None:
        self._server = server
        self._runtime = runtime
        self.config = config
        self.address = server.address
        tls = config.tls_cert if config.tls_cert else None
        self.client = Client(
            self.address,
            token=config.token,
            tls=tls,
            inline_limit_bytes=config.inline_limit,
            message_limit=config.message_limit,
        )
        # The client calls the server's handlers in this process, without a socket; other clients
        # (``connect(lab.address)``, the workers' nested calls) come through gRPC.
        handlers, interceptors = server.rpc_handlers, server.rpc_interceptors
        self.client._connection.open_with(
            lambda: LocalChannel(handlers, interceptors, message_limit=config.message_limit, context=context)
        )
        self._stopped = False
        runtime.on_shutdown(self._stop_at_exit)

    @property
    def running(self) -> bool:
        return not self._stopped

    def stop(self, grace_s: float | None = None) -> None:
        """Shut the server down: running work gets ``grace_s`` (default: the configured grace) to finish."""
        self._stop(grace_s, "was stopped; start a lab and")

    def _stop(self, grace_s: float | None, what_happened: str) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._runtime.forget(self._stop_at_exit)
        self.client.close()
        # Handles made with this lab's client keep its (closed) connection: tell them why it is gone.
        self.client._connection.retire(
            f"cannot reach the spearlet at {self.address}: its lab {what_happened} re-run the cell that "
            "defines the function (handles belong to the lab they were made with)"
        )
        self._runtime.run(self._server.stop(grace_s))
        # The server deleted its free files; this process's mappings of them would keep their memory.
        object_dir.KEPT.release()

    def panel(
        self,
        interval: float = 1.0,
        *,
        alerts: Sequence[Alert] | None = None,
        on_alert: Callable[[Breach], Any] | None = None,
    ) -> Panel:
        """A live monitoring panel of this lab (see :meth:`Client.panel`); it stops when the lab stops."""
        return self.client.panel(interval, alerts=alerts, on_alert=on_alert)

    async def _stop_at_exit(self) -> None:
        self._stopped = True
        await self._server.stop(min(EXIT_GRACE_S, self.config.shutdown_grace_s))

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<Lab {state}: store={self.config.store} executor={self.config.executor}>"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return _repr.bundle(
            self,
            "lab.html",
            state="running" if self.running else "stopped",
            address=self.address,
            store=self.config.store,
            executor=self.config.executor,
            max_concurrent=self._server.engine.config.max_concurrent,
        )


_lock = threading.Lock()
_current: Lab | None = None


def start_lab(**options: Any) -> Lab:
    """Start (or return the running) in-process spearlet and a client for it.

    ``options`` are those of ``spearlet serve`` (``store``, ``executor``, ``max_concurrent``,
    ``max_queued``, ``default_timeout_ms``, ``token``, ``tls_cert``/``tls_key``, ...); a lab defaults to
    ``port=0`` and ``store="memory://"``. ``forward_output`` (default ``True``) shows what remote functions
    print in the calling cell as it is printed.
    """
    global _current
    from spearlet import preflight

    forward_output = options.pop("forward_output", True)
    if not isinstance(forward_output, bool):
        raise TypeError(f"forward_output is True or False, not {forward_output!r}")
    config = lab_config(options)
    runtime = get_runtime()
    with _lock:
        running = _current if _current is not None and _current.running else None
        if running is not None and running.config == config:
            running.client.forward_output = forward_output
            return running
        # Everything that can be checked is checked before the running lab is stopped: a bad option
        # must not cost the user the lab (and every handle on it) they have.
        preflight.check(
            config,
            free_store=running.config.store if running else "",
            free_port=running._server.port if running else 0,
        )
        if running is not None:
            running._stop(None, "was replaced by a new start_lab(); use the new lab's client and")
        server, context = runtime.run(_start_server(config))
        _current = Lab(server, context, config, runtime)
        _current.client.forward_output = forward_output
        return _current


def lab_config(options: dict[str, Any]) -> Config:
    from spearlet.config import Config

    names = {f.name for f in dataclasses.fields(Config)}
    unknown = sorted(set(options) - names)
    if unknown:
        raise TypeError(
            f"start_lab() got an unknown option {unknown[0]!r}; options are {', '.join(sorted(names))}"
        )
    return Config(**{**LAB_DEFAULTS, **options})


async def _start_server(config: Config) -> tuple[SpearletServer, contextvars.Context]:
    """The started server, and the context its own tasks run in (the lab's client runs its handlers in
    copies of it)."""
    from spearlet.app import SpearletServer

    server = SpearletServer(config)
    try:
        await server.start()
    except BaseException:
        await server.stop(0)
        raise
    return server, contextvars.copy_context()
