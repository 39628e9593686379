"""Admission and inference workers: `workers` threads, each owning one Captioner, fed by one FIFO queue.

    pool.check_room()                            # Problem 503 + Retry-After when workers + queue_size are taken
    body = await pool.run(job)                   # takes a place (or 503), runs job(captioner) on a worker
                                                 # thread; the place is freed when the job ends, not when a
                                                 # timed-out request gives up

One Captioner per thread because a TFLite interpreter is not thread-safe. A request takes its place only once
its whole upload has arrived and its images passed their header check (routes.py): a slow upload holds no
place. guards.UploadRoute calls check_room() before the upload is read, so a full server still refuses at
once instead of after a 20 MB upload. Device-safe: stdlib only.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
from collections.abc import Callable
from typing import Any

from edgecap.serve.problems import Problem


class Ticket:
    """One admitted request's place in the pool; released once (by the request, or by the worker that ran
    its job, so a request that timed out keeps its place until the worker is free again)."""

    def __init__(self, pool: InferencePool):
        self._pool, self._released = pool, False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._pool._release()


class InferencePool:
    """Worker threads, each with its own captioner, fed by one FIFO queue.

    Args:
        captioners: one per worker (runtime.captioner.Captioner, or anything with its interface).
        queue_size: admitted requests beyond the running ones; admit() refuses past workers + queue_size.
        retry_after_s: the Retry-After of the 503 it raises.
    """

    def __init__(self, captioners: list, queue_size: int, retry_after_s: int = 2):
        if not captioners:
            raise ValueError("InferencePool needs at least one captioner")
        self.workers, self.capacity = len(captioners), len(captioners) + queue_size
        self.retry_after_s = retry_after_s
        self._lock = threading.Lock()
        self._admitted = 0
        self._running = 0
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, args=(c,), name=f"edgecap-worker-{i}", daemon=True)
            for i, c in enumerate(captioners)
        ]
        for t in self._threads:
            t.start()

    def check_room(self) -> None:
        """Problem 503 + Retry-After when every place is taken now (takes nothing)."""
        with self._lock:
            self._refuse_if_full()

    def admit(self) -> Ticket:
        """A place for one request, or Problem 503 + Retry-After when every place is taken."""
        with self._lock:
            self._refuse_if_full()
            self._admitted += 1
        return Ticket(self)

    def _refuse_if_full(self) -> None:
        if self._admitted >= self.capacity:
            raise Problem(
                503,
                "queue-full",
                f"the server is busy: {self.workers} report(s) running and {self.capacity - self.workers} "
                f"waiting; retry in {self.retry_after_s} s",
                headers={"Retry-After": str(self.retry_after_s)},
            )

    def _release(self) -> None:
        with self._lock:
            self._admitted -= 1

    def submit(self, ticket: Ticket, job: Callable[[Any], Any]) -> concurrent.futures.Future:
        """Run job(captioner) on a worker; the ticket is released when the job ends (or is skipped)."""
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._jobs.put((job, fut, ticket))
        return fut

    async def run(self, job: Callable[[Any], Any]) -> Any:
        """admit() then submit(), awaited; cancelling the caller (a deadline) cancels a job that has not started
        (its place is freed when a worker skips it)."""
        return await asyncio.wrap_future(self.submit(self.admit(), job))

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "workers": self.workers,
                "running": self._running,
                "waiting": self._admitted - self._running,
                "capacity": self.capacity,
            }

    def close(self, timeout: float = 5.0) -> None:
        for _ in self._threads:
            self._jobs.put(None)
        for t in self._threads:
            t.join(timeout)

    def _work(self, captioner) -> None:
        while True:
            item = self._jobs.get()
            if item is None:
                return
            job, fut, ticket = item
            try:
                if not fut.set_running_or_notify_cancel():  # its request gave up while it waited
                    continue
                with self._lock:
                    self._running += 1
                try:
                    fut.set_result(job(captioner))
                except BaseException as e:  # noqa: BLE001  handed to the request, which answers with it
                    fut.set_exception(e)
                finally:
                    with self._lock:
                        self._running -= 1
            finally:
                ticket.release()
