"""The asyncio API: the surface of `boxlite` with coroutines, safe inside a running loop.

Every C call that may block runs in a worker thread (asyncio.to_thread); waiting for a
process is a loop of bounded waits (`boxlite_execution_wait_timeout`, 200 ms each), so
neither the event loop nor a worker is ever held for long, and cancelling the awaiting task
kills the process.

    async with boxlite.aio.Runtime() as runtime:
        async with await runtime.create_box(root_disk=...) as box:
            result = await box.exec("echo", "hi")
            async for chunk in box.stream("sh", "-c", "yes | head -n 3"):
                print(chunk.stream, chunk.data)
"""

from __future__ import annotations

import asyncio
import os
import queue
import time
from typing import Any, AsyncIterator, Awaitable, Callable, Generator, List, Mapping, Optional, Sequence, Tuple, TypeVar, Union

from . import _core
from ._core import _END, _WAIT_SLICE_MS, DEFAULT_OUTPUT_LIMIT, Chunk, ExecResult, Port, PortForwardInfo, Volume
from .errors import ExecTimeout

__all__ = ["Runtime", "Box", "Execution", "Stdin", "ExecResult", "Chunk", "Port", "Volume", "PortForwardInfo"]

T = TypeVar("T")


async def _run(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await asyncio.to_thread(fn, *args, **kwargs)


class Stdin:
    """The process's stdin: `await write(data)`, `await close()`."""

    def __init__(self, sync: _core.Stdin) -> None:
        self._sync = sync

    async def write(self, data: Union[bytes, str]) -> int:
        return await _run(self._sync.write, data)

    async def close(self) -> None:
        await _run(self._sync.close)

    @property
    def closed(self) -> bool:
        return self._sync.closed


class Execution:
    """A process in a box: `async for chunk in execution` (streamed), `await wait()`,
    `stdin`, `await kill()`, `await signal(n)`, `await close()` (kills it if running)."""

    def __init__(self, sync: _core.Execution) -> None:
        self._sync = sync
        self.stdin = Stdin(sync.stdin)
        self.id = sync.id
        self.pid = sync.pid

    @property
    def sync(self) -> _core.Execution:
        """The blocking Execution underneath."""
        return self._sync

    def _next_item(self) -> Any:
        state = self._sync._state
        deadline = time.monotonic() + 0.5
        while True:
            try:
                return state.chunks.get(timeout=0.1)
            except queue.Empty:
                if self._sync._handle.closed or time.monotonic() > deadline:
                    return None  # back to the loop now and then (cancellation)

    async def __aiter__(self) -> AsyncIterator[Chunk]:
        if not self._sync._state.streaming:
            raise _core.errors.InvalidState("this execution collects its output (start it with stream=True to iterate)")
        while True:
            item = await _run(self._next_item)
            if item is None:
                if self._sync._handle.closed:
                    return
                continue
            if item is _END:
                break
            yield item
        await self.wait()

    async def wait(self, timeout: Optional[float] = None) -> ExecResult:
        """As Execution.wait: ExecTimeout (with the output so far) after `timeout` seconds."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            slice_ms = _WAIT_SLICE_MS
            if deadline is not None:
                slice_ms = max(0, min(slice_ms, int((deadline - loop.time()) * 1000)))
            result = await _run(self._sync.poll, slice_ms)
            if result is not None:
                return result
            if deadline is not None and loop.time() >= deadline:
                s = self._sync._state
                raise ExecTimeout(f"the process was still running after {timeout} s", bytes(s.stdout), bytes(s.stderr))

    async def kill(self) -> None:
        await _run(self._sync.kill)

    async def signal(self, signum: int) -> None:
        await _run(self._sync.signal, signum)

    async def resize(self, rows: int, cols: int) -> None:
        await _run(self._sync.resize, rows, cols)

    @property
    def running(self) -> bool:
        return self._sync.running

    async def close(self) -> None:
        await _run(self._sync.close)

    async def __aenter__(self) -> "Execution":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


class _Started:
    """What Box.stream returns: awaitable (the Execution) and async-iterable (its chunks)."""

    def __init__(self, start: Callable[[], Awaitable[Execution]]) -> None:
        self._start = start
        self._execution: Optional[Execution] = None

    async def _get(self) -> Execution:
        if self._execution is None:
            self._execution = await self._start()
        return self._execution

    def __await__(self) -> Generator[Any, None, Execution]:
        return self._get().__await__()

    async def __aiter__(self) -> AsyncIterator[Chunk]:
        execution = await self._get()
        try:
            async for chunk in execution:
                yield chunk
        finally:
            await execution.close()


class Box:
    """A box; as boxlite.Box with coroutines. `async with` closes it."""

    def __init__(self, sync: _core.Box) -> None:
        self._sync = sync
        self.id = sync.id
        self.name = sync.name
        self.image = sync.image

    @property
    def sync(self) -> _core.Box:
        return self._sync

    async def status(self) -> str:
        return await _run(lambda: self._sync.status)

    async def stop_reason(self) -> Optional[str]:
        return await _run(lambda: self._sync.stop_reason)

    async def start(self) -> None:
        await _run(self._sync.start)

    async def stop(self) -> None:
        await _run(self._sync.stop)

    async def restart(self) -> None:
        await _run(self._sync.restart)

    async def remove(self, force: bool = True) -> None:
        await _run(self._sync.remove, force)

    async def metrics(self) -> dict:
        return await _run(self._sync.metrics)

    async def start_exec(self, cmd: Union[str, Sequence[str]], *args: str, **kwargs: Any) -> Execution:
        """As Box.start_exec (env, cwd, user, timeout, tty, stream, output_limit, stdin)."""
        return Execution(await _run(self._sync.start_exec, cmd, *args, **kwargs))

    async def exec(
        self,
        cmd: Union[str, Sequence[str]],
        *args: str,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        user: Optional[str] = None,
        timeout: Optional[float] = None,
        input: Optional[Union[bytes, str]] = None,
        check: bool = False,
        tty: Optional[Tuple[int, int]] = None,
        output_limit: int = DEFAULT_OUTPUT_LIMIT,
    ) -> ExecResult:
        """As Box.exec. Cancelling the awaiting task kills the process."""
        stdin = input is not None
        execution = await self.start_exec(
            cmd, *args, env=env, cwd=cwd, user=user, timeout=timeout, tty=tty, output_limit=output_limit, stdin=stdin
        )
        try:
            if stdin:
                await _run(_core._feed, execution.sync, input)
            result = await execution.wait()
        finally:
            await asyncio.shield(execution.close())
        return result.check() if check else result

    def stream(
        self,
        cmd: Union[str, Sequence[str]],
        *args: str,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        user: Optional[str] = None,
        timeout: Optional[float] = None,
        input: Optional[Union[bytes, str]] = None,
        tty: Optional[Tuple[int, int]] = None,
    ) -> _Started:
        """`async for chunk in box.stream(...)`, or `execution = await box.stream(...)`."""

        async def start() -> Execution:
            return Execution(
                await _run(self._sync.stream, cmd, *args, env=env, cwd=cwd, user=user, timeout=timeout, input=input, tty=tty)
            )

        return _Started(start)

    async def forwarded_port(self, guest_port: int, protocol: str = "tcp") -> int:
        return await _run(self._sync.forwarded_port, guest_port, protocol)

    async def port_forwards(self) -> List[PortForwardInfo]:
        return await _run(self._sync.port_forwards)

    async def copy_in(self, host_src: Union[str, os.PathLike], guest_dest: str) -> None:
        await _run(self._sync.copy_in, host_src, guest_dest)

    async def copy_out(self, guest_src: str, host_dest: Union[str, os.PathLike]) -> None:
        await _run(self._sync.copy_out, guest_src, host_dest)

    async def close(self) -> None:
        await _run(self._sync.close)

    async def __aenter__(self) -> "Box":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


class Runtime:
    """As boxlite.Runtime; opened by `async with Runtime(...)` or `await Runtime.open(...)`."""

    def __init__(self, home: Optional[Union[str, os.PathLike]] = None, engine: Optional[str] = None) -> None:
        self._home = home
        self._engine = engine
        self._sync: Optional[_core.Runtime] = None

    @classmethod
    async def open(cls, home: Optional[Union[str, os.PathLike]] = None, engine: Optional[str] = None) -> "Runtime":
        runtime = cls(home, engine)
        await runtime._open()
        return runtime

    async def _open(self) -> None:
        if self._sync is None:
            self._sync = await _run(_core.Runtime, self._home, self._engine)

    @property
    def sync(self) -> _core.Runtime:
        if self._sync is None:
            raise _core.errors.InvalidState("the runtime is not open: use `async with` or `await Runtime.open(...)`")
        return self._sync

    @property
    def home(self) -> str:
        return self.sync.home

    async def create_box(self, image: Optional[str] = None, root_disk: Optional[Union[str, os.PathLike]] = None, **kwargs: Any) -> Box:
        """As Runtime.create_box (same keyword options)."""
        return Box(await _run(self.sync.create_box, image, root_disk, **kwargs))

    async def get_box(self, id_or_name: str) -> Box:
        return Box(await _run(self.sync.get_box, id_or_name))

    async def list_boxes(self) -> List[Box]:
        return [Box(b) for b in await _run(self.sync.list_boxes)]

    async def close(self) -> None:
        if self._sync is not None:
            await _run(self._sync.close)

    async def __aenter__(self) -> "Runtime":
        await self._open()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()
