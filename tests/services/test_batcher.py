"""The micro-batching queue on its own (no model): batches form under load, never for a lone caller."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from lungaudit.services.serve.batcher import MicroBatcher


def _run(coro):
    return asyncio.run(coro)


def test_concurrent_callers_share_batches_and_get_their_own_results():
    seen: list[list[int]] = []
    threads: set[str] = set()

    def handler(items: list[int]) -> list[int]:
        seen.append(list(items))
        threads.add(threading.current_thread().name)
        time.sleep(0.02)  # a device pass: callers arriving meanwhile queue for the next batch
        return [i * 10 for i in items]

    async def main() -> list[int]:
        b: MicroBatcher[int, int] = MicroBatcher(handler, max_batch=8, max_wait_ms=50)
        await b.start()
        try:
            async def caller(i: int) -> int:
                with b.incoming():
                    await asyncio.sleep(0.001 * (i % 3))  # "decoding"
                return await b.submit(i)

            return await asyncio.gather(*(caller(i) for i in range(20)))
        finally:
            assert b.stats.items == 20 and b.stats.batches == len(seen)
            await b.stop()

    results = _run(main())
    assert results == [i * 10 for i in range(20)]
    assert max(len(s) for s in seen) > 1 and all(len(s) <= 8 for s in seen)
    assert sorted(i for s in seen for i in s) == list(range(20))
    assert len(threads) == 1  # one device thread: the handler never runs concurrently with itself


def test_a_lone_request_does_not_wait_for_company():
    async def main() -> float:
        b: MicroBatcher[int, int] = MicroBatcher(lambda xs: xs, max_batch=8, max_wait_ms=2000)
        await b.start()
        try:
            t0 = time.perf_counter()
            assert await b.submit(1) == 1
            return time.perf_counter() - t0
        finally:
            await b.stop()

    assert _run(main()) < 1.0  # a lone caller: nothing else in flight, so nothing to wait for


def test_clients_that_took_turns_are_gathered_into_one_batch():
    """8 clients in two groups of 4 (one group answered while the other's batch runs) merge into one batch:
    the worker remembers that 8 requests were in flight at once and waits for the stragglers."""
    seen: list[int] = []

    def handler(items: list[int]) -> list[int]:
        seen.append(len(items))
        time.sleep(0.05)
        return items

    async def main() -> None:
        b: MicroBatcher[int, int] = MicroBatcher(handler, max_batch=16, max_wait_ms=1000)
        await b.start()
        try:
            first = [asyncio.create_task(b.submit(i)) for i in range(4)]
            await asyncio.sleep(0.01)  # group A's batch runs; group B queues meanwhile
            second = [asyncio.create_task(b.submit(i)) for i in range(4, 8)]
            await asyncio.gather(*first, *second)
            # group B's answer comes first now; group A's clients return 30 ms later, not "decoding" yet
            late = [asyncio.create_task(b.submit(i)) for i in range(8, 12)]
            await asyncio.sleep(0.03)
            late += [asyncio.create_task(b.submit(i)) for i in range(12, 16)]
            await asyncio.gather(*late)
        finally:
            await b.stop()

    _run(main())
    assert seen[:2] == [4, 4] and seen[2] == 8, seen


def test_handler_errors_reach_every_caller_of_the_batch_and_the_worker_survives():
    calls = {"n": 0}

    def handler(items: list[int]) -> list[int]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("device fell over")
        return items

    async def main() -> None:
        b: MicroBatcher[int, int] = MicroBatcher(handler, max_batch=4, max_wait_ms=0)
        await b.start()
        try:
            with pytest.raises(RuntimeError, match="device fell over"):
                await b.submit(1)
            assert await b.submit(2) == 2
        finally:
            await b.stop()

    _run(main())


def test_wrong_length_results_and_bad_settings_are_refused():
    with pytest.raises(ValueError):
        MicroBatcher(lambda xs: xs, max_batch=0)
    with pytest.raises(ValueError):
        MicroBatcher(lambda xs: xs, max_wait_ms=-1)

    async def main() -> None:
        b: MicroBatcher[int, int] = MicroBatcher(lambda xs: [], max_batch=4)
        await b.start()
        try:
            with pytest.raises(RuntimeError, match="0 results for 1 items"):
                await b.submit(1)
        finally:
            await b.stop()

    _run(main())


def test_submit_before_start_is_an_error():
    async def main() -> None:
        with pytest.raises(RuntimeError, match="not running"):
            await MicroBatcher(lambda xs: xs).submit(1)

    _run(main())
