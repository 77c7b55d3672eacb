"""The dead-letter routes' turns in one process: a walk waits in the event loop, not in a pool thread."""

from __future__ import annotations

import asyncio
import threading
import types

import pytest
from fastapi import HTTPException

from app.routers.dead_letters import walked


def test_a_second_walk_of_one_queue_waits_without_a_thread_and_is_refused_with_retry_after_in_time():
    release = threading.Event()
    started = []

    def slow_walk(queue, *args):
        started.append(queue)
        release.wait(10)
        return queue

    office = types.SimpleNamespace(timeout=0.2)

    async def both():
        first = asyncio.create_task(walked(office, "ingest", slow_walk))
        for _ in range(500):  # at most 5 s for the first walk to be in its thread
            if started:
                break
            await asyncio.sleep(0.01)
        assert started, "the first walk did not start"
        with pytest.raises(HTTPException) as refused:
            await walked(office, "ingest", slow_walk)
        other_queue = asyncio.create_task(walked(office, "tasks", lambda queue: queue))
        assert await asyncio.wait_for(other_queue, 5) == "tasks", "another queue's walk does not wait"
        release.set()
        return await first, refused.value

    result, refused = asyncio.run(both())
    assert result == "ingest" and started == ["ingest"], "the refused walk never took a thread"
    assert refused.status_code == 503 and refused.headers["Retry-After"]
    assert "another listing, replay or discard of ingest" in refused.detail


def test_a_walk_that_fails_gives_its_turn_back():
    office = types.SimpleNamespace(timeout=0.5)

    def broken(queue):
        raise OSError("connection refused")

    async def twice():
        for _ in range(2):
            with pytest.raises(HTTPException) as failed:
                await walked(office, "ingest", broken)
            assert failed.value.status_code == 503 and "message broker unavailable" in failed.value.detail
        return await walked(office, "ingest", lambda queue: "walked")

    assert asyncio.run(twice()) == "walked"
