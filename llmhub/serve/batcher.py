"""The micro-batcher: requests wait in a bounded queue and run together, one forward pass per batch.

Why: decoding a 135M-parameter model on a CPU is bound by reading the weights, so 16 prompts in
one `generate` call cost little more than one (about 3.9x less time per example here). The
original server ran one request at a time; `naive` mode keeps that behaviour (batch size 1) behind
the same queue so the two modes differ only in batching.

A single worker task owns the model: it takes the oldest waiting request, waits up to
`max_wait_ms` for up to `max_batch_size - 1` companions, prefers companions of similar prompt
length (less padding per batch) and the same `max_new_tokens`, and runs the batch in a one-thread
executor so the event loop keeps accepting (and rejecting) requests while the model works.
The oldest request always goes first, so no request starves behind shorter ones.
"""
from __future__ import annotations

import asyncio
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

log = logging.getLogger("llmhub.server")


class QueueFull(Exception):
    """The queue holds max_queue requests; `retry_after` is a guess in whole seconds."""

    def __init__(self, retry_after: int, queued: int, limit: int):
        super().__init__(f"queue full, retry after {retry_after} s")
        # counted when refused: by the time the answer is written the worker may have taken some
        self.retry_after, self.queued, self.limit = retry_after, queued, limit


@dataclass
class Item:
    prompt: str
    tokens: int  # prompt length in tokens, for grouping by length
    max_new_tokens: int
    future: asyncio.Future
    key: object = None  # requests run together only with the same key (and budget)
    enqueued: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    """`await submit(prompt, tokens, max_new_tokens)` -> the completion of that prompt.

    run_batch(prompts, budgets) -> completions is called in a worker thread, one batch at a time.
    on_batch(size, seconds, queue_wait_seconds) reports every batch (metrics).
    """

    def __init__(self, run_batch: Callable[[list[str], list[int]], list[str]], max_batch_size: int,
                 max_wait_ms: float, max_queue: int, on_batch: Callable | None = None):
        if max_batch_size < 1 or max_queue < 1 or max_wait_ms < 0:
            raise ValueError("max_batch_size and max_queue must be >= 1 and max_wait_ms >= 0")
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self.max_queue = max_queue
        self.on_batch = on_batch or (lambda *a: None)
        self.waiting: list[Item] = []
        self.running = 0  # requests in the batch being computed
        self.batches = 0
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self._worker: asyncio.Task | None = None
        self._seconds_per_batch = 1.0  # running mean, for Retry-After

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._worker:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        for item in self.waiting:
            if not item.future.done():
                item.future.set_exception(RuntimeError("server shutting down"))
        self._executor.shutdown(wait=False, cancel_futures=True)

    @property
    def alive(self) -> bool:
        """False once the worker task has ended: nothing would ever answer a new request."""
        return self._worker is not None and not self._worker.done()

    @property
    def depth(self) -> int:
        return len(self.waiting)

    def retry_after(self) -> int:
        """Seconds until the queue has drained by one batch's worth: the batches ahead x their time."""
        batches_ahead = math.ceil((len(self.waiting) + self.running) / self.max_batch_size)
        return max(1, math.ceil(batches_ahead * self._seconds_per_batch))

    async def submit(self, prompt, tokens: int, max_new_tokens: int, key=None):
        # Reject at once when full: a client told to come back later beats a request that times
        # out after sitting behind max_queue others.
        if len(self.waiting) >= self.max_queue:
            raise QueueFull(self.retry_after(), len(self.waiting), self.max_queue)
        item = Item(prompt, tokens, max_new_tokens, asyncio.get_running_loop().create_future(), key)
        self.waiting.append(item)
        self._wake.set()
        try:
            return await item.future
        except asyncio.CancelledError:  # the client left: free its place in the queue
            if item in self.waiting:
                self.waiting.remove(item)
            raise

    def _pick(self) -> list[Item]:
        """The oldest request plus the waiting ones of its group (key and budget) closest to it in length."""
        head = self.waiting[0]
        group = [it for it in self.waiting[1:] if (it.key, it.max_new_tokens) == (head.key, head.max_new_tokens)]
        batch = [head] + sorted(group, key=lambda it: (abs(it.tokens - head.tokens), it.enqueued))
        batch = batch[: self.max_batch_size]
        chosen = {id(it) for it in batch}
        self.waiting = [it for it in self.waiting if id(it) not in chosen]
        return batch

    async def _loop(self) -> None:
        while True:
            if not self.waiting:
                self._wake.clear()
                await self._wake.wait()
            batch: list[Item] = []
            try:
                batch = await self._next_batch()
                if batch:
                    await self._run(batch)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # never let one bad batch stop the worker: fail it, keep serving
                log.exception("batch of %d failed; the worker goes on", len(batch))
                for it in batch:
                    if not it.future.done():
                        it.future.set_exception(e)
                self.running = 0

    async def _next_batch(self) -> list[Item]:
        """Give companions until max_wait after the oldest request arrived to show up."""
        deadline = self.waiting[0].enqueued + self.max_wait if self.waiting else 0.0
        while self.waiting and len(self.waiting) < self.max_batch_size and time.perf_counter() < deadline:
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), deadline - time.perf_counter())
            except asyncio.TimeoutError:
                break
        # Clients that left while we waited have removed themselves; the queue may now be empty.
        self.waiting = [it for it in self.waiting if not it.future.done()]
        return self._pick() if self.waiting else []

    async def _run(self, batch: list[Item]) -> None:
        loop = asyncio.get_running_loop()
        self.running = len(batch)
        start = time.perf_counter()
        try:
            outputs = await loop.run_in_executor(
                self._executor, self.run_batch, [it.prompt for it in batch], [it.max_new_tokens for it in batch])
        except Exception as e:  # a model failure answers this batch with 500, the server lives on
            log.error("model failed on a batch of %d: %s: %s", len(batch), type(e).__name__, e)
            for it in batch:
                if not it.future.done():
                    it.future.set_exception(e)
            outputs = None
        seconds = time.perf_counter() - start
        self.running = 0
        self.batches += 1
        self._seconds_per_batch = 0.8 * self._seconds_per_batch + 0.2 * seconds if self.batches > 1 else seconds
        self.on_batch(len(batch), seconds, [start - it.enqueued for it in batch])
        if outputs is not None:
            for it, out in zip(batch, outputs):
                if not it.future.done():
                    it.future.set_result(out)
