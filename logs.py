"""loguru everywhere: standard-library logging (uvicorn, dramatiq, pika) is routed into it."""

from __future__ import annotations

import logging
import sys

from loguru import logger


class _ToLoguru(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        logger.opt(depth=6, exception=record.exc_info).log(level, record.getMessage())


def configure_logging(level: str = "INFO") -> None:
    logger.remove()
    logger.add(sys.stderr, level=level.upper(), enqueue=False)
    logging.basicConfig(handlers=[_ToLoguru()], level=level.upper(), force=True)
    logging.getLogger("pika").setLevel(logging.WARNING)
