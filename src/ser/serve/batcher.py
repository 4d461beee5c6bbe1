"""Dynamic micro-batching: concurrent requests share one model call.

Requests wait at most `max_wait_s` for company, and a batch never exceeds `max_batch`; while the
batches run, the next one fills up, so under load batches grow by themselves and the wait hardly
matters. Each model instance (an `infer` function, e.g. one recognizer, or an instance in its own process
with `answer_clips`; Triton's instance group) has its own thread, which gathers its next batch from the
queue itself as soon as its last one is answered: the event loop only adds clips and settles answers, so a
busy loop never leaves a model idle between batches (measured: benchmarks/RESULTS.md). One batch fills at
a time. A clip may come as a function that makes its samples (decoding the upload): it runs where the
batch runs, not on the event loop; if it raises, only that request fails. If a batch fails as a whole,
its items are retried one by one, so one bad input fails only its own request.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

T = TypeVar("T")


class QueueFullError(RuntimeError):
    """More requests are waiting than the service is configured to hold."""


class NoInstanceError(RuntimeError):
    """Every model instance has stopped for good (its process died and could not be started again)."""


NO_INSTANCE = "no model instance is running: each has exited and could not be started again"


Clip = np.ndarray | Callable[[], np.ndarray]  # samples, or how to make them (where its batch runs)
Outcome = tuple[object, BaseException | None]  # (answer, error) of one item
Infer = Callable[[Sequence[np.ndarray]], Sequence]  # a model instance: clips' samples → their answers, in order


@dataclass
class _Item:
    clip: Clip
    future: asyncio.Future
    abandoned: bool = False  # its request stopped waiting (a timeout) before its batch started


class MicroBatcher(Generic[T]):
    def __init__(
        self,
        infer: Infer | Sequence[Infer | Any],
        max_batch: int = 16,
        max_wait_s: float = 0.005,
        max_queue: int = 256,
        on_batch: Callable[[int, float], None] | None = None,
        on_depth: Callable[[int], None] | None = None,
    ):
        """`infer` answers a list of clips in order (a list of them: model instances that may run at once;
        an instance may instead have `answer_clips`, as the function below, `alive` and `restart`, as a
        ProcessInstance does); `on_batch(size, seconds)` observes each model call and `on_depth(clips)` every
        change of the queue's length (a clip joining, a batch leaving); both are called from the batch threads
        too."""
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.instances = [infer] if callable(infer) else list(infer)
        if not self.instances:
            raise ValueError("no model instance to run batches on")
        self.max_batch, self.max_wait_s, self.max_queue = max_batch, max_wait_s, max_queue
        self.on_batch, self.on_depth = on_batch, on_depth
        self._pending: deque[_Item] = deque()
        self._arrived = threading.Condition()  # guards _pending and _stopping; notified as clips join
        self._filling = threading.Lock()  # held by the one instance gathering the next batch
        self._stopping = False
        self._serving = 0  # instance threads still taking batches (guarded by _arrived)
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def running(self) -> bool:
        return bool(self._threads) and not self._stopping and all(t.is_alive() for t in self._threads)

    @property
    def queued(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._serving = len(self.instances)
        self._threads = [
            threading.Thread(target=self._serve, args=(infer,), name=f"ser-batch-{index}", daemon=True)
            for index, infer in enumerate(self.instances)
        ]
        for thread in self._threads:
            thread.start()

    async def stop(self) -> None:
        """Let the running batches finish and answer; every clip still queued gets an error."""
        with self._arrived:
            self._stopping = True
            self._arrived.notify_all()
            left = list(self._pending)
            self._pending.clear()
        for item in left:
            _settle(item.future, error=RuntimeError("the service is shutting down"))
        threads = self._threads
        await asyncio.get_running_loop().run_in_executor(None, lambda: [t.join() for t in threads])
        await asyncio.sleep(0)  # the last batches' answers, handed over by call_soon_threadsafe

    async def submit(self, clip: Clip) -> T:
        """The answer for one clip, computed in some batch. Cancelling the wait (a timeout) drops the
        clip if its batch has not started yet."""
        item = _Item(clip, asyncio.get_running_loop().create_future())
        with self._arrived:
            if self._stopping:
                raise RuntimeError("the service is shutting down")
            if self._threads and not self._serving:
                raise NoInstanceError(NO_INSTANCE)
            if len(self._pending) >= self.max_queue:
                raise QueueFullError(f"{self.max_queue} requests are already waiting; retry later")
            self._pending.append(item)
            self._report_depth()
            self._arrived.notify()
        try:
            return await item.future
        except asyncio.CancelledError:
            item.abandoned = True
            raise

    def _report_depth(self) -> None:
        """Called with `_arrived` held, so reports from the loop and the batch threads arrive in order."""
        if self.on_depth is not None:
            self.on_depth(len(self._pending))

    def _serve(self, infer: Any) -> None:
        """One instance's thread: gather a batch, answer it, hand the answers to the event loop; again."""
        assert self._loop is not None
        answer = getattr(infer, "answer_clips", None)  # an instance in its own process answers whole batches
        while (batch := self._next_batch()) is not None:
            batch = [item for item in batch if not item.abandoned]
            if not batch:
                continue
            clips = [item.clip for item in batch]
            try:
                outcomes, calls = answer(clips) if answer is not None else answer_clips(clips, infer)
            except Exception as error:  # the instance itself failed (its process died)
                outcomes, calls = [(None, error)] * len(batch), []
            if self.on_batch is not None:
                for size, seconds in calls:
                    self.on_batch(size, seconds)
            self._loop.call_soon_threadsafe(_settle_batch, batch, outcomes)
            if not getattr(infer, "alive", True) and not infer.restart():
                self._give_up()  # could not be started again: the other instances carry on; not `running` any more
                return

    def _give_up(self) -> None:
        """This instance's thread stops taking batches; if it was the last, every queued clip fails now
        (and every later one at once, in `submit`) rather than waiting out its timeout."""
        assert self._loop is not None
        with self._arrived:
            self._serving -= 1
            if self._serving:
                return
            left = list(self._pending)
            self._pending.clear()
            self._report_depth()
        self._loop.call_soon_threadsafe(_settle_batch, left, [(None, NoInstanceError(NO_INSTANCE))] * len(left))

    def _next_batch(self) -> list[_Item] | None:
        """The next batch: the first clip to come, and whatever joins within `max_wait_s` of it, up to
        `max_batch` (everything already waiting is taken at once). None once the batcher stops."""
        with self._filling, self._arrived:
            while not self._pending:
                if self._stopping:
                    return None
                self._arrived.wait()
            batch = [self._pending.popleft()]
            deadline = time.monotonic() + self.max_wait_s
            while len(batch) < self.max_batch:
                if self._pending:
                    batch.append(self._pending.popleft())
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stopping:
                    break
                self._arrived.wait(remaining)
            self._report_depth()
            return batch


def answer_clips(clips: list[Clip], infer: Callable) -> tuple[list[Outcome], list[tuple[int, float]]]:
    """(answer, error) per clip, and (size, seconds) of each model call: each clip made, then one model
    call; if that fails as a whole, each clip alone, so one bad input fails only its own request."""
    calls: list[tuple[int, float]] = []

    def timed(batch: list) -> Sequence:
        started = time.perf_counter()
        results = infer(batch)
        calls.append((len(batch), time.perf_counter() - started))
        return results

    outcomes: list[Outcome] = [(None, None)] * len(clips)
    ready, samples = [], []
    for index, clip in enumerate(clips):
        if callable(clip):
            try:
                clip = clip()
            except Exception as error:
                outcomes[index] = (None, error)
                continue
        ready.append(index)
        samples.append(clip)
    if not ready:
        return outcomes, calls
    try:
        results = timed(samples)
    except Exception as error:
        if len(ready) == 1:
            outcomes[ready[0]] = (None, error)
            return outcomes, calls
        for index, clip in zip(ready, samples, strict=True):  # find the culprit: everyone else still gets an answer
            try:
                (result,) = timed([clip])
                outcomes[index] = (result, None)
            except Exception as item_error:
                outcomes[index] = (None, item_error)
        return outcomes, calls
    for index, result in zip(ready, results, strict=True):
        outcomes[index] = (result, None)
    return outcomes, calls


def _settle_batch(batch: list[_Item], outcomes: list[Outcome]) -> None:
    for item, (result, error) in zip(batch, outcomes, strict=True):
        _settle(item.future, result=result, error=error)


def _settle(future: asyncio.Future, result: object = None, error: BaseException | None = None) -> None:
    if future.done():  # the request gave up waiting
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
