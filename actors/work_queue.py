"""Dramatiq's work queue, from its consumer thread to its worker threads, with a cheaper hand-off.

Dramatiq's worker hands every message over through a `queue.PriorityQueue`.
Its `get` waits on a `threading.Condition`: the consumer's `put` notifies the
worker while holding the queue's mutex, and the woken worker, before it can
return, takes that mutex again, often still held, so it sleeps a second
time. Measured in a loop (one thread putting, four getting, as
`task_done` is called): ~23.5 against ~14 us of CPU a message with the
queue below (bench/RESULTS.md). This one keeps the PriorityQueue's heap,
mutex and task counting (`join`, `task_done`, `unfinished_tasks` behave as
before) and counts the items ready in a `queue.SimpleQueue` of tokens, whose
blocking `get` is C code that wakes the waiter once.

A token is put after its item and taken before one, so a `get` that has a
token always finds an item; the item is the one of highest priority at that
moment, as PriorityQueue's would be.
"""

from __future__ import annotations

import queue
from typing import Any

from dramatiq.middleware import Middleware


class HandOffQueue(queue.PriorityQueue):
    """A PriorityQueue without a bound whose `get` is woken by one C-level signal."""

    def __init__(self) -> None:
        super().__init__()
        self._ready: queue.SimpleQueue[None] = queue.SimpleQueue()

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        with self.mutex:
            self._put(item)
            self.unfinished_tasks += 1
        self._ready.put(None)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        self._ready.get(block, timeout)  # raises queue.Empty as PriorityQueue.get would
        with self.mutex:
            return self._get()


class HandOffWorkQueue(Middleware):
    """Gives each Dramatiq worker a HandOffQueue before its consumer and worker threads are made."""

    def before_worker_boot(self, broker, worker) -> None:
        worker.work_queue = HandOffQueue()
