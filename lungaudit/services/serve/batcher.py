"""A micro-batching queue: concurrent requests share one pass over the device.

Requests decode their uploads in parallel threads, then :meth:`MicroBatcher.submit` the prepared
items. One worker coroutine takes the first waiting item, gathers more for at most ``max_wait_ms``
up to ``max_batch``, and runs the handler on the whole batch in a single device thread. While a batch
runs, new requests queue up and form the next one, so the batch size -- and the throughput -- grows
with the load by itself.

It waits only where company is coming, and only as long as ``max_wait_ms``: while other requests
are still arriving or decoding (see :meth:`MicroBatcher.incoming`), and while the batch is smaller
than the number of requests recently in flight at once (sampled at each submit over the last
``window_s``: roughly the number of concurrent clients). The second rule matters: without it, 8
clients settle into two groups of 4 that take turns (each batch starts with the 4 that queued while
the other 4 ran, those 4 being busy with their pictures), and on a CPU a batch of 4 costs nearly as
much per upload as a batch of 1. A lone client never waits: nothing else is in flight.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class BatchStats:
    batches: int = 0
    items: int = 0
    largest: int = 0
    busy_s: float = 0.0  # time spent in the handler (the device pass)
    sizes: dict[int, int] = field(default_factory=dict)  # batch size -> how many batches had it

    def add(self, n: int, seconds: float) -> None:
        self.batches += 1
        self.items += n
        self.busy_s += seconds
        self.largest = max(self.largest, n)
        self.sizes[n] = self.sizes.get(n, 0) + 1

    def to_dict(self) -> dict[str, Any]:
        mean = self.items / self.batches if self.batches else None
        return {"batches": self.batches, "items": self.items, "largest": self.largest, "mean": mean, "busy_s": self.busy_s,
                "sizes": {str(k): v for k, v in sorted(self.sizes.items())}}  # fmt: skip


class MicroBatcher(Generic[T, R]):
    """``await submit(item)`` -> ``handler([... item ...])[i]``, batched across concurrent callers.

    ``handler`` maps a list of items to a list of results of the same length, in order; it runs in
    one dedicated thread, so it is never called concurrently with itself. If it raises, every caller
    of that batch gets the exception.
    """

    def __init__(self, handler: Callable[[list[T]], Sequence[R]], max_batch: int = 16, max_wait_ms: float = 100.0) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be non-negative, got {max_wait_ms}")
        self.handler, self.max_batch, self.max_wait = handler, max_batch, max_wait_ms / 1000.0
        self.stats = BatchStats()
        self._queue: asyncio.Queue[tuple[T, asyncio.Future[R]]] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._incoming = 0
        self._running = 0  # uploads in the batch the device thread is working on
        self._in_flight: collections.deque[tuple[float, int]] = collections.deque()  # (time, requests in flight) at each submit
        self.window_s = 2.0

    async def start(self) -> None:
        """Start the worker on the running event loop (the app's lifespan calls this)."""
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lungaudit-device")
        self._worker = asyncio.create_task(self._run(), name="lungaudit-batcher")

    async def stop(self) -> None:
        """Cancel the worker, fail what is still queued, release the device thread."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        while self._queue is not None and not self._queue.empty():
            _, fut = self._queue.get_nowait()
            if not fut.done():
                fut.set_exception(RuntimeError("the server is shutting down"))
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        self._worker = self._executor = None

    @property
    def queued(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    @contextlib.contextmanager
    def incoming(self) -> Iterator[None]:
        """Mark a request that will submit soon (its upload is arriving or decoding): the worker may wait for it."""
        self._incoming += 1
        try:
            yield
        finally:
            self._incoming -= 1

    async def submit(self, item: T) -> R:
        if self._queue is None or self._worker is None:
            raise RuntimeError("the batcher is not running (start() it in the app's lifespan)")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[R] = loop.create_future()
        self._in_flight.append((loop.time(), self._queue.qsize() + 1 + self._running + self._incoming))
        await self._queue.put((item, fut))
        return await fut

    def expected(self, now: float) -> int:
        """How many requests were in flight at once lately (1 when none were): the batch worth waiting for."""
        while self._in_flight and self._in_flight[0][0] < now - self.window_s:
            self._in_flight.popleft()
        return max((n for _, n in self._in_flight), default=1)

    async def _gather(self) -> list[tuple[T, asyncio.Future[R]]]:
        """The first waiting item, plus whatever joins within ``max_wait`` (or is already queued)."""
        assert self._queue is not None
        batch = [await self._queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait
        target = min(self.max_batch, self.expected(loop.time()))
        while len(batch) < self.max_batch:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            left = deadline - loop.time()
            if left <= 0 or (self._incoming == 0 and len(batch) >= target):
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), left))
            except asyncio.TimeoutError:
                break
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            live = [(item, fut) for item, fut in batch if not fut.done()]  # a caller may have gone
            if not live:
                continue
            t0 = loop.time()
            self._running = len(live)
            results: Sequence[R] = ()
            error: Exception | None = None
            try:
                results = await loop.run_in_executor(self._executor, self.handler, [item for item, _ in live])
                if len(results) != len(live):
                    raise RuntimeError(f"batch handler returned {len(results)} results for {len(live)} items")
            except Exception as e:  # handed to every waiting caller, who turns it into a response
                error = e
            finally:
                self._running = 0
            self.stats.add(len(live), loop.time() - t0)
            for k, (_, fut) in enumerate(live):
                if fut.done():
                    continue
                if error is not None:
                    fut.set_exception(error)
                else:
                    fut.set_result(results[k])


__all__ = ["BatchStats", "MicroBatcher"]
