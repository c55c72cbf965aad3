"""Bounded background work for the inference pipeline: a prefetching source thread, an ordered
pool of writer threads, and a clock of each stage's busy seconds. Helper threads run one torch
thread each (:func:`helper_thread_init`)."""
from __future__ import annotations

import queue
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Callable, Deque, Dict, Iterable, Iterator, Tuple

import torch


def helper_thread_init() -> None:
    """One torch thread in a helper thread (decoding, flow, writing): the cores belong to the
    network, and nested OpenMP pools on top of the helper threads stall each other."""
    torch.set_num_threads(1)


class StageClock:
    """Busy seconds per stage name, added from any thread."""

    def __init__(self) -> None:
        self.seconds: Dict[str, float] = {}
        self._lock = threading.Lock()

    def add(self, stage: str, seconds: float) -> None:
        """Count ``seconds`` more for ``stage``."""
        with self._lock:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    @contextmanager
    def time(self, stage: str) -> Iterator[None]:
        """Count the block's wall time for ``stage``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - start)


def prefetch(iterable: Iterable[Any], depth: int) -> Iterator[Any]:
    """Iterate ``iterable`` on a background thread, at most ``depth`` items ahead of the caller.

    An exception of the producer is raised in the caller; closing the iterator stops the producer.
    """
    items: "queue.Queue[Tuple[str, Any]]" = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def put(item: Tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        helper_thread_init()
        try:
            for item in iterable:
                if not put(("item", item)):
                    return
            put(("end", None))
        except BaseException as error:  # handed to the consumer
            put(("error", error))

    thread = threading.Thread(target=produce, name="fsnet-source", daemon=True)
    thread.start()
    try:
        while True:
            kind, item = items.get()
            if kind == "end":
                return
            if kind == "error":
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


class OrderedPool:
    """Jobs on ``threads`` threads, at most ``limit`` unfinished; results in submission order.

    :meth:`submit` first hands back the oldest results while more than ``limit`` are pending
    (that is what bounds the memory of queued maps); each result goes to ``on_result``.
    """

    def __init__(self, threads: int, limit: int, on_result: Callable[[Any], None]) -> None:
        self.limit, self.on_result = max(1, limit), on_result
        self.pending: Deque[Future] = deque()
        self._pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="fsnet-writer",
                                        initializer=helper_thread_init)

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue ``fn(*args)``, waiting for the oldest jobs while too many are pending."""
        while len(self.pending) >= self.limit:
            self.on_result(self.pending.popleft().result())
        self.pending.append(self._pool.submit(fn, *args))

    def drain(self) -> None:
        """Wait for every job, handing their results back in order."""
        while self.pending:
            self.on_result(self.pending.popleft().result())

    def __enter__(self) -> "OrderedPool":
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if error is not None:
            for future in self.pending:
                future.cancel()
        self._pool.shutdown(wait=True)
