"""The bare grpc.aio baseline server: a unary echo and a server stream, with no work of their own.

Run as a child process (``python -m bench.echo_server``); it prints ``listening on HOST:PORT``.
``Stream`` takes an 8-byte little-endian count followed by a payload and sends the payload back that many
times, as fast as grpc.aio lets it. ``Relay`` echoes through a worker process: the handler sends the
request to a child over a socket and awaits its reply, read by the event loop as spearlet's pool does.
It is the floor of any grpc.aio server that runs each call in another process. ``DurableRelay`` also
commits one batch per call to SQLite, set up as spearlet's store is, before it answers: the floor of a
server that runs each call in another process and keeps a durable record of it.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import struct
import subprocess
import sys
from collections import deque
from collections.abc import AsyncIterator

import grpc

from . import raw_sqlite

SERVICE = "bench.Echo"
ECHO_METHOD = f"/{SERVICE}/Echo"
STREAM_METHOD = f"/{SERVICE}/Stream"
RELAY_METHOD = f"/{SERVICE}/Relay"
DURABLE_RELAY_METHOD = f"/{SERVICE}/DurableRelay"
#: DurableRelay's database, in the working directory (the suite runs its servers in a directory of its own).
RECORDS_FILE = "echo-records.db"
COUNT = struct.Struct("<Q")
SIZE = struct.Struct("<I")
# The worker: read a length-prefixed message, send it back.
_WORKER = """
import socket, struct, sys
sock = socket.socket(fileno=int(sys.argv[1]))
size = struct.Struct("<I")
buf = b""
while True:
    data = sock.recv(1 << 16)
    if not data:
        break
    buf += data
    while len(buf) >= 4 and len(buf) >= 4 + size.unpack_from(buf)[0]:
        end = 4 + size.unpack_from(buf)[0]
        sock.sendall(buf[:end])
        buf = buf[end:]
"""


class Relay:
    """One worker process, one call at a time in order (calls queue in ``waiting``)."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair()
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(theirs.fileno())], pass_fds=(theirs.fileno(),)
        )
        theirs.close()
        ours.setblocking(False)
        self._sock = ours
        self._buf = b""
        self._waiting: deque[asyncio.Future[bytes]] = deque()
        asyncio.get_running_loop().add_reader(ours.fileno(), self._readable)

    def _readable(self) -> None:
        self._buf += self._sock.recv(1 << 16)
        while len(self._buf) >= 4 and len(self._buf) >= 4 + SIZE.unpack_from(self._buf)[0]:
            end = 4 + SIZE.unpack_from(self._buf)[0]
            reply, self._buf = self._buf[4:end], self._buf[end:]
            self._waiting.popleft().set_result(reply)

    async def call(self, request: bytes) -> bytes:
        fut = asyncio.get_running_loop().create_future()
        self._waiting.append(fut)
        self._sock.send(SIZE.pack(len(request)) + request)
        return await fut


class Record:
    """Each call's record and index entry, committed together in one WAL transaction on the event loop's
    thread, as spearlet's SQLite store commits them (:mod:`bench.raw_sqlite`)."""

    def __init__(self, path: str) -> None:
        self._conn = raw_sqlite.connect(path)
        self._ids = itertools.count()

    def commit(self, value: bytes) -> None:
        key = f"{next(self._ids):016d}"
        self._conn.execute("BEGIN IMMEDIATE")
        self._conn.executemany(raw_sqlite.UPSERT, ((f"e/{key}", value), (f"i/{key}", b"")))
        self._conn.execute("COMMIT")


def stream_request(count: int, payload: bytes) -> bytes:
    return COUNT.pack(count) + payload


async def _echo(request: bytes, context: object) -> bytes:
    return request


async def _stream(request: bytes, context: object) -> AsyncIterator[bytes]:
    (count,) = COUNT.unpack_from(request)
    payload = request[COUNT.size :]
    for _ in range(count):
        yield payload


async def main() -> None:
    server = grpc.aio.server()
    relay = Relay()
    records = Record(RECORDS_FILE)

    async def _relay(request: bytes, context: object) -> bytes:
        return await relay.call(request)

    async def _durable_relay(request: bytes, context: object) -> bytes:
        reply = await relay.call(request)
        records.commit(reply)
        return reply

    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Echo": grpc.unary_unary_rpc_method_handler(_echo),
            "Stream": grpc.unary_stream_rpc_method_handler(_stream),
            "Relay": grpc.unary_unary_rpc_method_handler(_relay),
            "DurableRelay": grpc.unary_unary_rpc_method_handler(_durable_relay),
        },
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"listening on 127.0.0.1:{port}", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main())
