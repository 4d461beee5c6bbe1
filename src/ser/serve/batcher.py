"""Dynamic micro-batching: concurrent requests share one model call.

Requests wait at most `max_wait_s` for company, and a batch never exceeds `max_batch`; while the
batches run, the next one fills up, so under load batches grow by themselves and the wait hardly
matters. Each model instance (an `infer` function, e.g. one recognizer; Triton's instance group)
runs one batch at a time on its own thread; with one instance the model's own thread pool does the
parallel work, with several (each on fewer threads) batches overlap, which on a small model costs
less than splitting each call across threads. A clip may come as a function that makes its samples
(decoding the upload): it runs on the batch's thread, not the event loop's, and no extra thread
hand-off is paid for it; if it raises, only that request fails. If a batch fails as a whole, its
items are retried one by one, so one bad input fails only its own request.
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


Clip = np.ndarray | Callable[[], np.ndarray]  # samples, or how to make them (on the batch's thread)


@dataclass
class _Item:
    clip: Clip
    future: asyncio.Future


class MicroBatcher(Generic[T]):
    def __init__(
        self,
        infer: Callable[[Sequence[np.ndarray]], Sequence[T]] | Sequence[Callable[[Sequence[np.ndarray]], Sequence[T]]],
        max_batch: int = 16,
        max_wait_s: float = 0.005,
        max_queue: int = 256,
        on_batch: Callable[[int, float], None] | None = None,
        on_depth: Callable[[int], None] | None = None,
    ):
        """`infer` answers a list of clips in order (a list of them: model instances that may run at
        once); `on_batch(size, seconds)` observes each model call and `on_depth(clips)` every change of
        the queue's length (a clip joining, a batch leaving)."""
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.instances = [infer] if callable(infer) else list(infer)
        if not self.instances:
            raise ValueError("no model instance to run batches on")
        self.max_batch, self.max_wait_s, self.on_batch, self.on_depth = max_batch, max_wait_s, on_batch, on_depth
        self._queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=max_queue)
        self._executor = ThreadPoolExecutor(max_workers=len(self.instances), thread_name_prefix="ser-batch")
        self._task: asyncio.Task | None = None
        self._batches: set[asyncio.Task] = set()

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
            await asyncio.gather(self._task, *self._batches, return_exceptions=True)
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if not item.future.done():
                item.future.set_exception(RuntimeError("the service is shutting down"))
        self._executor.shutdown(wait=True)

    async def submit(self, clip: Clip) -> T:
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
        free: asyncio.Queue[int] = asyncio.Queue()
        for index in range(len(self.instances)):
            free.put_nowait(index)
        while True:
            instance = await free.get()  # while every instance is busy, the next batch keeps filling
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
                    async with asyncio.timeout(remaining):  # no task per wait, unlike wait_for
                        batch.append(await self._queue.get())
                except TimeoutError:
                    break
            self._report_depth()
            batch = [item for item in batch if not item.future.done()]  # timed out while queued
            if not batch:
                free.put_nowait(instance)
                continue
            task = loop.create_task(self._execute(batch, instance))
            self._batches.add(task)
            task.add_done_callback(lambda t, i=instance: (self._batches.discard(t), free.put_nowait(i)))

    async def _execute(self, batch: list[_Item], instance: int) -> None:
        loop = asyncio.get_running_loop()
        outcomes = await loop.run_in_executor(self._executor, self._answer, batch, self.instances[instance])
        for item, (result, error) in zip(batch, outcomes, strict=True):
            _settle(item.future, result=result, error=error)

    def _answer(self, batch: list[_Item], infer: Callable) -> list[tuple[object, BaseException | None]]:
        """(answer, error) per item, on the batch's thread: each clip made, then one model call."""
        outcomes: list[tuple[object, BaseException | None]] = [(None, None)] * len(batch)
        ready = []
        for index, item in enumerate(batch):
            if callable(item.clip):
                try:
                    item.clip = item.clip()
                except Exception as error:
                    outcomes[index] = (None, error)
                    continue
            ready.append(index)
        try:
            results = self._timed(infer, [batch[i].clip for i in ready])
        except Exception as error:
            if len(ready) == 1:
                outcomes[ready[0]] = (None, error)
                return outcomes
            for index in ready:  # find the culprit: everyone else still gets an answer
                try:
                    (result,) = self._timed(infer, [batch[index].clip])
                    outcomes[index] = (result, None)
                except Exception as item_error:
                    outcomes[index] = (None, item_error)
            return outcomes
        for index, result in zip(ready, results, strict=True):
            outcomes[index] = (result, None)
        return outcomes

    def _timed(self, infer: Callable, clips: list) -> Sequence[T]:
        if not clips:
            return []
        started = time.perf_counter()
        results = infer(clips)
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
