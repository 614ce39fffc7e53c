"""A child process started without blocking the event loop, with its pipes as asyncio streams.

``subprocess.Popen`` does not return until the child has exec'd (it reads an error pipe that the exec
closes), and under load that takes the scheduler tens of milliseconds per start. Run on the loop, as
``asyncio.create_subprocess_exec`` does, every start would hold up every timer and every cancel of the
server; so the ``Popen`` runs in a short-lived thread of its own, and the loop only connects the pipes.
The exit is watched on the loop through a pidfd (or polled where there is none), and the child is reaped
there, so that until then its process group id cannot be reused and :meth:`ChildProcess.kill` is safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Mapping, Sequence

#: How often the exit is checked where there is no pidfd (not Linux, or a kernel older than 5.3).
_POLL_EXIT_S = 0.05
#: How long :meth:`ChildProcess.reap` waits for the exit by default.
_REAP_TIMEOUT_S = 5.0


class ChildProcess:
    """One child in a session of its own (its process group can be killed), with piped stdin, stdout and
    stderr. Make one with :meth:`start`; :meth:`close` it once done with its pipes."""

    def __init__(self, popen: subprocess.Popen[bytes], loop: asyncio.AbstractEventLoop) -> None:
        """Watch ``popen``'s exit (its pipes are connected by :meth:`start`)."""
        self._popen = popen
        self._loop = loop
        self.pid = popen.pid
        #: Resolved with the return code once the child is reaped.
        self._exited: asyncio.Future[int] = loop.create_future()
        self._pidfd: int | None = None
        self._transports: list[asyncio.BaseTransport] = []
        self.stdin: asyncio.StreamWriter | None = None
        self.stdout: asyncio.StreamReader | None = None
        self.stderr: asyncio.StreamReader | None = None
        try:
            self._pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):
            loop.call_later(_POLL_EXIT_S, self._poll_exit)
        else:
            loop.add_reader(self._pidfd, self._on_exit)

    @classmethod
    async def start(cls, argv: Sequence[str], *, env: Mapping[str, str], read_limit: int) -> ChildProcess:
        """Start ``argv``; its stdout and stderr readers buffer up to ``read_limit`` bytes (asyncio stops
        reading a pipe at twice that). Raises ``OSError`` if it cannot start. Cancelled meanwhile, the
        child is killed and reaped as soon as it exists, and then the cancellation goes on."""
        loop = asyncio.get_running_loop()
        starting = _popen_in_thread(loop, argv, env)
        try:
            popen = await asyncio.shield(starting)
        except asyncio.CancelledError:
            late = await _outlasting_cancellations(starting)
            if late is not None:
                child = cls(late, loop)
                child.kill()
                await child.reap()
                child.close()
            raise
        child = cls(popen, loop)
        try:
            await child._connect_pipes(read_limit)
        except BaseException:
            child.kill()
            await child.reap()
            child.close()
            raise
        return child

    async def _connect_pipes(self, read_limit: int) -> None:
        popen, loop = self._popen, self._loop
        assert popen.stdin is not None and popen.stdout is not None and popen.stderr is not None
        # FlowControlMixin is the protocol behind asyncio's own StreamWriters: it gives drain() its wait.
        transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, popen.stdin)
        self._transports.append(transport)
        self.stdin = asyncio.StreamWriter(transport, protocol, None, loop)
        self.stdout = await self._read_pipe(popen.stdout, read_limit)
        self.stderr = await self._read_pipe(popen.stderr, read_limit)

    async def _read_pipe(self, pipe: object, read_limit: int) -> asyncio.StreamReader:
        reader = asyncio.StreamReader(limit=read_limit, loop=self._loop)
        transport, _ = await self._loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader, loop=self._loop), pipe
        )
        self._transports.append(transport)
        return reader

    def kill(self) -> None:
        """SIGKILL the child's process group (while the child is not reaped, so that the id is still its)."""
        if not self._exited.done():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)

    async def wait(self) -> int:
        """Its return code, once it has exited and been reaped."""
        return await asyncio.shield(self._exited)

    async def reap(self, timeout_s: float = _REAP_TIMEOUT_S) -> None:
        """Wait up to ``timeout_s`` for the exit, even through further cancellations (the caller
        re-raises)."""
        deadline = self._loop.time() + timeout_s
        while not self._exited.done() and (remaining := deadline - self._loop.time()) > 0:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait((self._exited,), timeout=remaining)

    def close(self) -> None:
        """Close the pipes now, dropping input not yet written (the exit is still watched until it comes)."""
        for transport in self._transports:
            if transport.is_closing():  # closed already (and abort() would fail on a write pipe's)
                continue
            if isinstance(transport, asyncio.WriteTransport):
                transport.abort()
            else:
                transport.close()
        for pipe in (self._popen.stdin, self._popen.stdout, self._popen.stderr):
            if pipe is not None:  # not handed to a transport (a start that failed half-way)
                pipe.close()

    def _on_exit(self) -> None:
        assert self._pidfd is not None
        self._loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = None
        self._exited.set_result(self._popen.wait())  # reaps; immediate, the child has exited

    def _poll_exit(self) -> None:
        returncode = self._popen.poll()
        if returncode is None:
            self._loop.call_later(_POLL_EXIT_S, self._poll_exit)
        else:
            self._exited.set_result(returncode)


def _popen_in_thread(
    loop: asyncio.AbstractEventLoop, argv: Sequence[str], env: Mapping[str, str]
) -> asyncio.Future[subprocess.Popen[bytes]]:
    """``Popen`` in a thread that ends with it (a pool would keep idle threads around)."""
    started: asyncio.Future[subprocess.Popen[bytes]] = loop.create_future()

    def settle(popen: subprocess.Popen[bytes] | None, error: BaseException | None) -> None:
        if error is not None:
            started.set_exception(error)
        else:
            assert popen is not None
            started.set_result(popen)

    def run() -> None:
        try:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                bufsize=0,
                env=env,
                start_new_session=True,
            )
        except BaseException as exc:
            loop.call_soon_threadsafe(settle, None, exc)
            return
        try:
            loop.call_soon_threadsafe(settle, popen, None)
        except RuntimeError:  # the loop is closed: nobody is left to run the child
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(popen.pid, signal.SIGKILL)
            popen.communicate()

    threading.Thread(target=run, name="spearlet-process-start", daemon=True).start()
    return started


async def _outlasting_cancellations(
    started: asyncio.Future[subprocess.Popen[bytes]],
) -> subprocess.Popen[bytes] | None:
    """The started child (None if it could not start), waited for through any number of cancellations
    (the caller re-raises)."""
    while not started.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait((started,))
    return None if started.exception() is not None else started.result()
