"""One model call at a time, over every request waiting for it, in chunks of bounded size.

Requests that arrive while the model is busy are batched: the next call takes the rows of
every request waiting (up to ``batch_rows``), so 16 clients sending one row each cost a few
model calls, not 16, and no request waits for others to arrive. A big request is computed
in chunks of ``batch_rows``: between two chunks the others' requests get their turn, a
request past its time budget stops, and a server told to stop (SIGTERM) fails what is left
at once instead of computing it. At most ``max_queue`` requests wait; one more is refused.
"""

from __future__ import annotations

import asyncio
import collections
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ottotrain.serving.requests import Batch, RequestError

# A model call of at most this many rows runs in the event loop's thread: handing it to the
# model thread and back costs two thread wake-ups, more than a small call itself on a busy
# machine; a bigger call runs in the model thread while the loop reads the next requests.
INLINE_ROWS = 8
# A small request finding the model idle is computed at once, without the queue's hops (a
# future, a task, two turns of the event loop), while small calls take less than this on
# average; a slower model goes through the queue, where the requests that arrive meanwhile
# are joined into one call.
DIRECT_SECONDS = 100e-6
# ... and so does a request that others are arriving with (16 clients' one-row requests: a
# call of several rows instead of one each), where small calls take this long or more: the
# queue's hops cost about 10 us a request, which a call shared by a few requests saves only
# when it takes more than that (the otto.yaml MLP's ~35 us, not the tutorial MLP's ~5 us).
SHARE_SECONDS = 20e-6


class _Job:
    __slots__ = ("batch", "future", "deadline", "out", "left")

    def __init__(self, batch: Batch, future, deadline: float):
        self.batch, self.future, self.deadline = batch, future, deadline
        self.out, self.left = None, batch.rows


class Batcher:
    """Calls ``predict(numbers, strings) -> probabilities`` for the requests waiting, in one thread."""

    def __init__(
        self, predict, batch_rows=512, max_queue=256, on_call=None,
        direct_seconds=DIRECT_SECONDS, share_seconds=SHARE_SECONDS,
    ):  # fmt: skip
        self.predict, self.batch_rows, self.max_queue = predict, batch_rows, max_queue
        self.direct_seconds = direct_seconds  # 0: every request through the queue
        self.share_seconds = share_seconds
        self.on_call = on_call or (lambda rows: None)  # told each model call's rows (metrics)
        self.pending = collections.deque()  # (job, start, stop): chunks not computed yet
        self.jobs = 0  # requests waiting or under way
        self.worker = None
        self.stopping = False
        self.calls = 0
        self.small_seconds = 0.0  # a running mean of the inline calls' times
        # How many requests the server has under way (its handlers started, or about to be):
        # set by the server (``workflows.serve.server``); one means this request alone.
        self.in_flight = lambda: 1
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="model")  # one model call at a time

    async def __call__(self, batch: Batch, deadline: float) -> np.ndarray:
        """The probabilities of ``batch``'s rows; RequestError 503 when refused or past ``deadline``
        (``time.monotonic()``)."""
        if self.stopping:
            raise RequestError("the server is shutting down; send the request again elsewhere", 503)
        if self.jobs >= self.max_queue:
            raise RequestError(f"server busy: {self.jobs} requests waiting (--max-queue); retry shortly", 429)
        if (
            batch.rows <= INLINE_ROWS
            and not self.pending
            and self.small_seconds < self.direct_seconds
            and (self.worker is None or self.worker.done())
            and (self.small_seconds < self.share_seconds or self.in_flight() <= 1)
        ):
            return self._call(batch.numbers, batch.strings)
        job = _Job(batch, asyncio.get_running_loop().create_future(), deadline)
        for start in range(0, batch.rows, self.batch_rows):
            self.pending.append((job, start, min(start + self.batch_rows, batch.rows)))
        self.jobs += 1
        try:
            if self.worker is None or self.worker.done():
                self.worker = asyncio.ensure_future(self._drain())
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                return await job.future
        except TimeoutError:
            raise RequestError(
                "the request took longer than its time budget (--time-budget); send fewer rows", 503
            ) from None
        finally:
            self.jobs -= 1

    def stop(self):
        """Fail every chunk not yet computed (the one under way finishes)."""
        self.stopping = True
        while self.pending:
            job, *_ = self.pending.popleft()
            if not job.future.done():
                job.future.set_exception(RequestError("the server is shutting down", 503))

    def _take(self) -> list:
        """The next model call's chunks: the first live one, then more up to ``batch_rows`` rows."""
        batch, rows = [], 0
        while self.pending:
            job, start, stop = self.pending[0]
            if job.future.done():  # failed, or past its budget: its other chunks are dropped
                self.pending.popleft()
                continue
            if batch and rows + stop - start > self.batch_rows:
                break
            batch.append(self.pending.popleft())
            rows += stop - start
        return batch

    async def _drain(self):
        loop = asyncio.get_running_loop()
        while self.pending and not self.stopping:
            chunks = self._take()
            if not chunks:
                break
            numbers = np.concatenate([j.batch.numbers[a:b] for j, a, b in chunks])
            strings = None
            if chunks[0][0].batch.strings is not None:
                strings = np.concatenate([j.batch.strings[a:b] for j, a, b in chunks])
            try:
                if len(numbers) <= INLINE_ROWS:  # a few rows: cheaper here than a thread's round trip
                    proba = self._call(numbers, strings)
                else:
                    proba = await loop.run_in_executor(self.pool, self.predict, numbers, strings)
                    self.calls += 1
                    self.on_call(len(numbers))
            except Exception as e:  # a bug, not a bad request: every request of the call gets it
                for job, *_ in chunks:
                    if not job.future.done():
                        job.future.set_exception(e)
                continue
            self._deliver(chunks, proba)

    def _call(self, numbers, strings) -> np.ndarray:
        """A small model call in this thread, timed."""
        t0 = time.perf_counter()
        proba = self.predict(numbers, strings)
        self.small_seconds += (time.perf_counter() - t0 - self.small_seconds) * 0.1
        self.calls += 1
        self.on_call(len(numbers))
        return proba

    @staticmethod
    def _deliver(chunks, proba):
        at = 0
        for job, a, b in chunks:
            if not job.future.done():
                if job.out is None:
                    job.out = np.empty((job.batch.rows, proba.shape[1]), proba.dtype)
                job.out[a:b] = proba[at : at + b - a]
                job.left -= b - a
                if job.left == 0:
                    job.future.set_result(job.out)
            at += b - a
