"""Ordinary background tasks."""

from __future__ import annotations

import time

import dramatiq
from dramatiq.middleware import CurrentMessage
from loguru import logger

from actors import TASKS_QUEUE, lifecycle, settings


@dramatiq.actor(queue_name=TASKS_QUEUE, time_limit=(settings.max_countdown_seconds + 60) * 1000)
def countdown(seconds: int) -> dict[str, int]:
    """Log one line per second, then a last line; the demo task of the pattern.

    Progress (seconds left) shows in GET /tasks/{message_id} while it runs.
    """
    message_id = CurrentMessage.get_current_message().message_id
    deadline = time.monotonic() + seconds
    for left in range(seconds, 0, -1):
        logger.info("countdown {}: {} s left", message_id, left)
        lifecycle.report_progress({"seconds_left": left, "seconds": seconds})
        time.sleep(max(0.0, deadline - left + 1 - time.monotonic()))
    lifecycle.report_progress({"seconds_left": 0, "seconds": seconds})
    logger.info("countdown {}: done", message_id)
    return {"seconds": seconds}
