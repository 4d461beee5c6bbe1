import asyncio
import threading

import numpy as np
import pytest

from ser.serve.batcher import MicroBatcher, QueueFullError


def _sums(clips):
    """A stand-in model that fails a whole batch when any clip holds NaN, like a real graph would."""
    if any(np.isnan(c).any() for c in clips):
        raise ValueError("NaN in the batch")
    return [float(c.sum()) for c in clips]


async def _with_batcher(batcher, body):
    batcher.start()
    try:
        return await body()
    finally:
        await batcher.stop()


def test_groups_concurrent_requests_up_to_max_batch():
    sizes = []
    batcher = MicroBatcher(_sums, max_batch=4, max_wait_s=0.05, on_batch=lambda n, s: sizes.append(n))
    clips = [np.full(10, i, dtype=np.float32) for i in range(10)]

    async def body():
        return await asyncio.gather(*(batcher.submit(c) for c in clips))

    answers = asyncio.run(_with_batcher(batcher, body))
    assert answers == [10.0 * i for i in range(10)]  # each request gets its own answer, in order
    assert sum(sizes) == 10 and max(sizes) == 4 and len(sizes) == 3


def test_the_queue_depth_is_reported_as_it_changes():
    # Ten clips join one by one (depth 1..10 while the model is busy), then leave a batch at a time.
    depths, release = [], threading.Event()

    def slow(clips):
        release.wait(5)
        return _sums(clips)

    batcher = MicroBatcher(slow, max_batch=4, max_wait_s=0.01, on_depth=depths.append)
    clips = [np.full(10, i, dtype=np.float32) for i in range(10)]

    async def body():
        first = asyncio.ensure_future(batcher.submit(clips[0]))
        await asyncio.sleep(0.1)  # its batch is running and blocked
        rest = [asyncio.ensure_future(batcher.submit(c)) for c in clips[1:]]
        await asyncio.sleep(0)
        live = depths[-1]
        release.set()
        await asyncio.gather(first, *rest)
        return live

    live = asyncio.run(_with_batcher(batcher, body))
    assert live == 9, depths  # all nine waiting, counted as they joined (not when a request arrived)
    assert depths[-1] == 0 and max(depths) == 9


def test_a_bad_clip_fails_only_its_own_request():
    batcher = MicroBatcher(_sums, max_batch=8, max_wait_s=0.05)
    clips = [np.ones(4, dtype=np.float32), np.array([np.nan], dtype=np.float32), np.full(4, 2, dtype=np.float32)]

    async def body():
        return await asyncio.gather(*(batcher.submit(c) for c in clips), return_exceptions=True)

    good, bad, also_good = asyncio.run(_with_batcher(batcher, body))
    assert (good, also_good) == (4.0, 8.0)
    assert isinstance(bad, ValueError)


def test_a_full_queue_refuses_instead_of_growing():
    release = threading.Event()

    def slow(clips):
        release.wait(5)
        return [0.0] * len(clips)

    batcher = MicroBatcher(slow, max_batch=1, max_wait_s=0, max_queue=2)

    async def body():
        first = asyncio.ensure_future(batcher.submit(np.zeros(1)))
        await asyncio.sleep(0.05)  # the first is now running, blocked
        waiting = [asyncio.ensure_future(batcher.submit(np.zeros(1))) for _ in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(QueueFullError, match="2 requests are already waiting"):
            await batcher.submit(np.zeros(1))
        release.set()
        return await asyncio.gather(first, *waiting)

    assert asyncio.run(_with_batcher(batcher, body)) == [0.0, 0.0, 0.0]


def test_max_batch_must_be_positive():
    with pytest.raises(ValueError, match="max_batch"):
        MicroBatcher(_sums, max_batch=0)


def test_instances_run_batches_at_once_and_each_batch_on_one_instance():
    # Two instances that each block until both are running: only concurrent batches finish.
    both_running = threading.Barrier(2, timeout=5)
    calls = []

    def instance(tag):
        def infer(clips):
            calls.append((tag, len(clips)))
            both_running.wait()
            return [tag] * len(clips)

        return infer

    batcher = MicroBatcher([instance("a"), instance("b")], max_batch=2, max_wait_s=0.05)

    async def body():
        return await asyncio.gather(*(batcher.submit(np.zeros(4, dtype=np.float32)) for _ in range(4)))

    answers = asyncio.run(_with_batcher(batcher, body))
    assert sorted(answers) == ["a", "a", "b", "b"]
    assert sorted(calls) == [("a", 2), ("b", 2)]


def test_a_clip_given_as_a_call_is_made_on_the_batch_thread_and_only_its_failure_is_its_own():
    threads = []

    def decode(value):
        def make():
            threads.append(threading.current_thread().name)
            if value < 0:
                raise ValueError(f"cannot decode {value}")
            return np.full(4, value, dtype=np.float32)

        return make

    batcher = MicroBatcher(_sums, max_batch=8, max_wait_s=0.05)

    async def body():
        clips = [decode(1), decode(-1), np.full(4, 3, dtype=np.float32), decode(2)]
        return await asyncio.gather(*(batcher.submit(c) for c in clips), return_exceptions=True)

    one, bad, three, two = asyncio.run(_with_batcher(batcher, body))
    assert (one, three, two) == (4.0, 12.0, 8.0)
    assert isinstance(bad, ValueError) and "cannot decode -1" in str(bad)
    assert threads and all(name.startswith("ser-batch") for name in threads)
