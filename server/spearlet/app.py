"""Builds and runs the grpc.aio server: FunctionService, ObjectService, grpc.health.v1 and reflection."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import _async as reflection_aio
from grpc_reflection.v1alpha import reflection_pb2

from spear_sdk.wire import function_pb2, object_pb2

from .auth import TokenInterceptor
from .blobs import ObjectFiles
from .config import Config
from .engine.core import Engine
from .function_service import FunctionService
from .health import HealthMonitor, ResourceMeter
from .object_service import ObjectService
from .objects import ObjectRepository
from .rpc import service_handler
from .store import KvStore, open_store

log = logging.getLogger(__name__)

FUNCTION_SERVICE = function_pb2.DESCRIPTOR.services_by_name["FunctionService"]
OBJECT_SERVICE = object_pb2.DESCRIPTOR.services_by_name["ObjectService"]
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"]
REFLECTION_SERVICE = reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"]


class SpearletServer:
    """One running spearlet: ``await start()``, read ``address``, ``await stop()`` to shut down gracefully."""

    def __init__(
        self, config: Config, interceptors: Sequence[grpc.aio.ServerInterceptor[Any, Any]] = ()
    ) -> None:
        """``interceptors`` run after the token check, on every call (tests count calls with one)."""
        self.config = config
        self._interceptors = list(interceptors)
        self.address = ""
        self.port = 0
        self._server: grpc.aio.Server | None = None
        self._store: KvStore | None = None
        self._engine: Engine | None = None
        self._monitor: HealthMonitor | None = None
        self._objects: ObjectRepository | None = None
        self._stopped = asyncio.Event()
        #: Once started: what serves each call, and the interceptors every call goes through first (the
        #: token check, then ``interceptors``), for a client in this process that calls them directly.
        self.rpc_handlers: tuple[grpc.GenericRpcHandler[Any, Any], ...] = ()
        self.rpc_interceptors: list[grpc.aio.ServerInterceptor[Any, Any]] = []

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise RuntimeError("the server is not started")
        return self._engine

    async def start(self) -> None:
        config = self.config
        self._store = store = open_store(config.store)
        await store.open()
        files = ObjectFiles.for_store(config.store, config.object_dir, shared=store.shared)
        objects = ObjectRepository(store, config.max_object_bytes, files, config.object_grace_s)
        self._objects = objects
        await objects.load_totals()
        self._engine = engine = Engine(config, store, objects)
        await engine.start()
        meter = ResourceMeter()
        self._monitor = monitor = HealthMonitor(engine, meter)

        limit = config.message_limit
        token_check = [TokenInterceptor(config.token)] if config.token else []
        self.rpc_interceptors = token_check + self._interceptors
        server = grpc.aio.server(
            options=[("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)],
            interceptors=self.rpc_interceptors,
        )
        # The standard services too go through service_handler, which answers undecodable requests
        # with INVALID_ARGUMENT where their own registration would answer UNKNOWN.
        reflected = (FUNCTION_SERVICE, OBJECT_SERVICE, HEALTH_SERVICE, REFLECTION_SERVICE)
        self.rpc_handlers = (
            service_handler(FunctionService(engine, monitor, meter), FUNCTION_SERVICE, function_pb2),
            service_handler(ObjectService(objects, config, limit), OBJECT_SERVICE, object_pb2),
            service_handler(monitor.grpc_servicer, HEALTH_SERVICE, health_pb2),
            service_handler(
                reflection_aio.ReflectionServicer([s.full_name for s in reflected]),
                REFLECTION_SERVICE,
                reflection_pb2,
            ),
        )
        server.add_generic_rpc_handlers(self.rpc_handlers)
        target = f"{_bracket(config.host)}:{config.port}"
        if config.tls_cert and config.tls_key:
            self.port = server.add_secure_port(target, _tls_credentials(config.tls_cert, config.tls_key))
        else:
            self.port = server.add_insecure_port(target)
        await server.start()
        self._server = server
        self.address = f"{_bracket(config.host)}:{self.port}"
        engine.worker_environment = worker_environment(config, self.port)
        monitor.start_watching()
        log.debug("spearlet listening on %s", self.address)

    async def stop(self, grace_s: float | None = None) -> None:
        """Report NOT_SERVING, let in-flight work finish within the grace period, cancel the rest, close."""
        if self._stopped.is_set():
            return
        grace = self.config.shutdown_grace_s if grace_s is None else grace_s
        if self._monitor is not None:
            await self._monitor.set_serving(False)
        server_stopped = asyncio.ensure_future(self._server.stop(grace + 1)) if self._server else None
        if self._engine is not None:
            await self._engine.close(grace)
        if server_stopped is not None:
            await server_stopped
        if self._monitor is not None:
            await self._monitor.stop()
        if self._store is not None:
            await self._store.close()
        if self._objects is not None:
            await self._objects.close()
        self._stopped.set()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()


def worker_environment(config: Config, port: int) -> dict[str, str]:
    """How a function running here reaches this server (names read by ``spear_sdk._nested``), so that a
    function handle inside a function works."""
    host = config.host
    if host in ("", "0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"  # a wildcard bind is reached on loopback from this machine
    environment = {"SPEAR_ADDRESS": f"{_bracket(host)}:{port}"}
    if config.token:
        environment["SPEAR_TOKEN"] = config.token
    if config.tls_cert:
        environment["SPEAR_TLS_CA"] = str(Path(config.tls_cert).resolve())
    return environment


def _tls_credentials(cert: str, key: str) -> grpc.ServerCredentials:
    return grpc.ssl_server_credentials([(Path(key).read_bytes(), Path(cert).read_bytes())])


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
