"""Dynamic micro-batching: concurrent requests share one model call.

Requests wait at most `max_wait_s` for company, and a batch never exceeds `max_batch`; while a batch
runs, the next one fills up, so under load batches grow by themselves and the wait hardly matters.
Batches run one at a time on a single worker thread (the model's own thread pool does the parallel
work). If a batch fails as a whole, its items are retried one by one, so one bad input fails only
its own request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

T = TypeVar("T")


class QueueFullError(RuntimeError):
    """More requests are waiting than the service is configured to hold."""


@dataclass
class _Item:
    clip: np.ndarray
    future: asyncio.Future


class MicroBatcher(Generic[T]):
    def __init__(
        self,
        infer: Callable[[Sequence[np.ndarray]], Sequence[T]],
        max_batch: int = 16,
        max_wait_s: float = 0.005,
        max_queue: int = 256,
        on_batch: Callable[[int, float], None] | None = None,
        on_depth: Callable[[int], None] | None = None,
    ):
        """`infer` answers a list of clips in order; `on_batch(size, seconds)` observes each model call and
        `on_depth(clips)` every change of the queue's length (a clip joining, a batch leaving)."""
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.infer, self.max_batch, self.max_wait_s, self.on_batch = infer, max_batch, max_wait_s, on_batch
        self.on_depth = on_depth
        self._queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=max_queue)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ser-batch")
        self._task: asyncio.Task | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="ser-micro-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if not item.future.done():
                item.future.set_exception(RuntimeError("the service is shutting down"))
        self._executor.shutdown(wait=True)

    async def submit(self, clip: np.ndarray) -> T:
        """The answer for one clip, computed in some batch. Cancelling the wait (a timeout) drops the
        clip if its batch has not started yet."""
        future = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait(_Item(clip, future))
        except asyncio.QueueFull:
            raise QueueFullError(f"{self._queue.maxsize} requests are already waiting; retry later") from None
        self._report_depth()
        return await future

    def _report_depth(self) -> None:
        if self.on_depth is not None:
            self.on_depth(self._queue.qsize())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self.max_wait_s
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                    continue
                except asyncio.QueueEmpty:
                    pass
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
            self._report_depth()
            batch = [item for item in batch if not item.future.done()]  # timed out while queued
            if batch:
                await self._execute(batch)

    async def _execute(self, batch: list[_Item]) -> None:
        try:
            results = await self._call([item.clip for item in batch])
        except Exception as error:
            if len(batch) == 1:
                _settle(batch[0].future, error=error)
                return
            for item in batch:  # find the culprit: everyone else still gets an answer
                try:
                    (result,) = await self._call([item.clip])
                except Exception as item_error:
                    _settle(item.future, error=item_error)
                else:
                    _settle(item.future, result=result)
            return
        for item, result in zip(batch, results, strict=True):
            _settle(item.future, result=result)

    async def _call(self, clips: list[np.ndarray]) -> Sequence[T]:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._timed, clips)

    def _timed(self, clips: list[np.ndarray]) -> Sequence[T]:
        started = time.perf_counter()
        results = self.infer(clips)
        if self.on_batch is not None:
            self.on_batch(len(clips), time.perf_counter() - started)
        return results


def _settle(future: asyncio.Future, result: object = None, error: BaseException | None = None) -> None:
    if future.done():  # the request gave up waiting
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
