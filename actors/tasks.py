"""Ordinary background tasks."""

from __future__ import annotations

import time

import dramatiq
from dramatiq.middleware import CurrentMessage
from loguru import logger

from actors import TASKS_QUEUE, settings


@dramatiq.actor(queue_name=TASKS_QUEUE, time_limit=(settings.max_countdown_seconds + 60) * 1000)
def countdown(seconds: int) -> None:
    """Log one line per second, then a last line; the demo task of the pattern."""
    message_id = CurrentMessage.get_current_message().message_id
    deadline = time.monotonic() + seconds
    for left in range(seconds, 0, -1):
        logger.info("countdown {}: {} s left", message_id, left)
        time.sleep(max(0.0, deadline - left + 1 - time.monotonic()))
    logger.info("countdown {}: done", message_id)
