"""asyncio plumbing: a private event loop for the synchronous API, merging async streams, and a bridge to a
backend that runs on an event loop of its own."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    """An event loop running in a daemon thread, so synchronous callers can run coroutines (even from inside
    another running loop, e.g. a notebook)."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self.thread:
            coro.close()
            raise RuntimeError("LoopThread.run called from its own loop; await the coroutine instead")
        future = self.submit(coro)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # Ctrl-C: stop the generation too
            raise

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        if not self.thread.is_alive():
            self.loop.close()


async def merge_streams(streams: Sequence[AsyncIterator[T]]) -> AsyncIterator[tuple[int, T]]:
    """(index, item) from several async iterators as items come; an error in one cancels the others."""
    if len(streams) == 1:
        async for item in streams[0]:
            yield 0, item
        return
    queue: asyncio.Queue = asyncio.Queue()
    done = object()

    async def pump(index: int, stream: AsyncIterator[T]) -> None:
        try:
            async for item in stream:
                await queue.put((index, item, None))
        except Exception as e:  # noqa: BLE001  (re-raised in the consumer)
            await queue.put((index, done, e))
            return
        await queue.put((index, done, None))

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    try:
        remaining = len(tasks)
        while remaining:
            index, item, error = await queue.get()
            if error is not None:
                raise error
            if item is done:
                remaining -= 1
                continue
            yield index, item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class LoopBridge:
    """A backend's asyncio API on an event loop of its own (vLLM, SGLang and LMDeploy bind their engines to the
    loop they start on), used from any other loop: the server's, or the synchronous API's."""

    def __init__(self, name: str) -> None:
        self.thread = LoopThread(name)

    def call(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the backend's loop thread (to build an engine there) and return its result."""

        async def run() -> T:
            return fn()

        return self.thread.run(run())

    async def stream(self, make: Callable[[], AsyncIterator[T]]) -> AsyncIterator[T]:
        """Iterate `make()` on the backend's loop; closing this iterator cancels it there (which aborts the
        request in every backend)."""
        caller = asyncio.get_running_loop()
        items: asyncio.Queue = asyncio.Queue()

        async def pump() -> None:
            try:
                async for item in make():
                    caller.call_soon_threadsafe(items.put_nowait, ("item", item))
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001  (re-raised in the consumer)
                caller.call_soon_threadsafe(items.put_nowait, ("error", e))
                return
            caller.call_soon_threadsafe(items.put_nowait, ("end", None))

        future = self.thread.submit(pump())
        try:
            while True:
                kind, item = await items.get()
                if kind == "end":
                    return
                if kind == "error":
                    raise item
                yield item
        finally:
            future.cancel()

    def close(self) -> None:
        self.thread.close()
