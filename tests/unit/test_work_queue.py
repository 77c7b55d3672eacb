"""actors/work_queue: Dramatiq's work queue with a cheaper hand-off, and the same behaviour."""

from __future__ import annotations

import queue
import threading
import time

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker

from actors.work_queue import HandOffQueue, HandOffWorkQueue


def test_items_come_out_highest_priority_first_as_from_a_priority_queue():
    work = HandOffQueue()
    for item in [(5, "e"), (1, "a"), (3, "c"), (1, "b")]:
        work.put(item)
    assert [work.get() for _ in range(4)] == [(1, "a"), (1, "b"), (3, "c"), (5, "e")]


def test_an_empty_queue_raises_empty_without_waiting_or_after_its_timeout():
    work = HandOffQueue()
    with pytest.raises(queue.Empty):
        work.get_nowait()
    started = time.monotonic()
    with pytest.raises(queue.Empty):
        work.get(timeout=0.05)
    assert time.monotonic() - started >= 0.05


def test_a_waiting_get_takes_the_item_put_from_another_thread():
    work = HandOffQueue()
    got: list = []
    taker = threading.Thread(target=lambda: got.append(work.get(timeout=10)))
    taker.start()
    work.put((0, "m-1"))
    taker.join(timeout=10)
    assert got == [(0, "m-1")]


def test_join_waits_until_every_item_is_done():
    work = HandOffQueue()
    work.put((0, "m-1"))
    work.put((0, "m-2"))
    assert work.unfinished_tasks == 2
    work.get()
    work.task_done()
    joined = threading.Event()
    threading.Thread(target=lambda: (work.join(), joined.set()), daemon=True).start()
    assert not joined.wait(0.05), "one item is not done yet"
    work.get()
    work.task_done()
    assert joined.wait(10)


def test_many_takers_get_every_item_exactly_once():
    work = HandOffQueue()
    taken: list[int] = []
    lock = threading.Lock()

    def take() -> None:
        while True:
            try:
                item = work.get(timeout=0.5)
            except queue.Empty:
                return
            with lock:
                taken.append(item[1])
            work.task_done()

    takers = [threading.Thread(target=take) for _ in range(8)]
    for taker in takers:
        taker.start()
    for number in range(5000):
        work.put((number % 3, number))
    work.join()
    for taker in takers:
        taker.join(timeout=10)
    assert sorted(taken) == list(range(5000))


def test_a_worker_of_a_broker_with_the_middleware_uses_it_and_processes_every_message():
    broker = StubBroker(middleware=[HandOffWorkQueue()])
    broker.emit_after("process_boot")
    seen: list[int] = []

    @dramatiq.actor(broker=broker, queue_name="hand-off")
    def remember(number: int) -> None:
        seen.append(number)

    worker = dramatiq.Worker(broker, worker_threads=4, worker_timeout=100)
    worker.start()
    try:
        assert isinstance(worker.work_queue, HandOffQueue)
        for number in range(200):
            remember.send(number)
        broker.join("hand-off", timeout=10_000)
        worker.join()
        assert sorted(seen) == list(range(200))
    finally:
        worker.stop()
