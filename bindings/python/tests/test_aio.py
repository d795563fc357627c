"""The asyncio API (boxlite.aio): the scenarios that wait, inside a running event loop,
with a ticker proving the loop is never blocked."""

from __future__ import annotations

import asyncio
import hashlib
import time

import pytest

import boxlite
import boxlite.aio

from conftest import ENGINE


class Ticker:
    """Measures the longest gap between ticks of a 10 ms timer on the loop."""

    def __init__(self) -> None:
        self.max_gap = 0.0
        self._task: asyncio.Task | None = None

    async def _run(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            self.max_gap = max(self.max_gap, now - last)
            last = now

    def __enter__(self) -> "Ticker":
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


def test_aio_surface_in_a_running_loop(home: str, rootfs: str) -> None:
    async def main() -> None:
        with Ticker() as ticker:
            async with boxlite.aio.Runtime(home=home, engine=ENGINE) as runtime:
                async with await runtime.create_box(root_disk=rootfs, root_disk_read_only=True, name="a") as box:
                    result = await box.exec("sh", "-c", "sleep 1; echo out; echo err >&2; exit 2")
                    assert (result.stdout, result.stderr, result.exit_code) == (b"out\n", b"err\n", 2)
                    # streaming, 8 MiB with a hash
                    size = 8 * 1024 * 1024
                    digest, total = hashlib.sha256(), 0
                    async for chunk in box.stream("sh", "-c", f"head -c {size} /dev/zero"):
                        assert chunk.stream == "stdout"
                        digest.update(chunk.data)
                        total += len(chunk.data)
                    assert total == size and digest.hexdigest() == hashlib.sha256(bytes(size)).hexdigest()
                    # stdin
                    execution = await box.start_exec("cat")
                    await execution.stdin.write(b"fed")
                    await execution.stdin.close()
                    assert (await execution.wait(timeout=30)).stdout == b"fed"
                    await execution.close()
                    # a timeout: partial output kept
                    with pytest.raises(boxlite.ExecTimeout) as info:
                        await box.exec("sh", "-c", "echo begun; sleep 1000", timeout=1, check=True)
                    assert info.value.stdout == b"begun\n"
                    # a bounded wait, then kill
                    execution = await box.start_exec("sleep", "1000")
                    with pytest.raises(boxlite.ExecTimeout):
                        await execution.wait(timeout=0.5)
                    await execution.kill()
                    assert (await execution.wait(timeout=10)).signal == 9
                    await execution.close()
                    # errors keep their type
                    with pytest.raises(boxlite.ProgramNotFound):
                        await box.exec("no-such-program")
                    found = await runtime.get_box("a")
                    assert found.id == box.id
                    await found.close()
        assert ticker.max_gap < 0.9, f"the event loop was blocked for {ticker.max_gap:.2f} s"

    asyncio.run(main())


def test_aio_cancel_kills_the_process(home: str, rootfs: str) -> None:
    async def main() -> None:
        async with boxlite.aio.Runtime(home=home, engine=ENGINE) as runtime:
            async with await runtime.create_box(root_disk=rootfs, root_disk_read_only=True) as box:
                task = asyncio.ensure_future(box.exec("sleep", "1000"))
                await asyncio.sleep(1.5)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                ps = await box.exec("ps")
                assert b"sleep 1000" not in ps.stdout, ps.stdout

    asyncio.run(main())
