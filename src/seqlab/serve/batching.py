"""On-the-fly batching: requests that arrive within a short window share one forward pass.

A request puts its inputs on a queue and waits. One worker per model takes the first waiting
request, keeps collecting for ``window`` seconds (or until ``max_batch_size`` inputs), then adds
the requests already waiting (with a window of 0 only those), runs all of their inputs through
the model at once in a worker thread, and hands each request its own slice of the outputs. Under
load a pass serves many requests; alone, a request waits at most the window. A request that gives up (timeout, client gone) is dropped before its pass runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

__all__ = ["Batcher"]


@dataclass
class _Pending:
    inputs: list[str]
    future: asyncio.Future


class Batcher:
    """Batch calls of ``run(inputs) -> outputs`` (one output per input) across requests."""

    def __init__(self, run: Callable[[list[str]], list], max_batch_size: int = 32,
                 window: float = 0.005) -> None:
        self.run = run
        self.max_batch_size = max_batch_size
        self.window = window
        self.batches = 0  # forward passes run so far
        self._executor = ThreadPoolExecutor(max_workers=1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None
        self._held: _Pending | None = None  # taken from the queue, did not fit the last batch

    def _ensure_worker(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._worker is None or self._worker.done():
            self._loop, self._queue, self._held = loop, asyncio.Queue(), None
            self._worker = loop.create_task(self._work())

    async def submit(self, inputs: list[str]) -> list:
        """The outputs for `inputs`, computed together with whatever else is waiting."""
        self._ensure_worker()
        future = self._loop.create_future()
        await self._queue.put(_Pending(list(inputs), future))
        return await future

    async def _next(self, timeout: float | None) -> _Pending:
        if self._held is not None:
            pending, self._held = self._held, None
            return pending
        if timeout is None:
            return await self._queue.get()
        return await asyncio.wait_for(self._queue.get(), timeout)

    def _waiting(self) -> _Pending | None:
        """A request that is already waiting, without waiting for one."""
        if self._held is not None:
            pending, self._held = self._held, None
            return pending
        try:
            return self._queue.get_nowait()
        except asyncio.QueueEmpty:
            return None

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._next(None)]
            count = len(batch[0].inputs)
            deadline = loop.time() + self.window
            while count < self.max_batch_size:
                remaining = deadline - loop.time()
                try:
                    # Past the window, only requests already waiting join (none is waited for).
                    pending = await self._next(remaining) if remaining > 0 else self._waiting()
                except TimeoutError:
                    break
                if pending is None:
                    break
                if count + len(pending.inputs) > self.max_batch_size:
                    self._held = pending  # first in the next pass
                    break
                batch.append(pending)
                count += len(pending.inputs)
            batch = [p for p in batch if not p.future.done()]  # dropped while waiting
            if not batch:
                continue
            inputs = [text for pending in batch for text in pending.inputs]
            self.batches += 1
            try:
                outputs = await loop.run_in_executor(self._executor, self.run, inputs)
            except Exception as exc:  # noqa: BLE001 (each waiting request reports it)
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(exc)
                continue
            start = 0
            for pending in batch:
                end = start + len(pending.inputs)
                if not pending.future.done():
                    pending.future.set_result(outputs[start:end])
                start = end

    async def call(self, function: Callable, *args):
        """Run `function(*args)` on this model's worker thread (unbatched work, e.g. streams)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)
