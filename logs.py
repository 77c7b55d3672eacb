"""loguru everywhere: standard-library logging (uvicorn, dramatiq, pika) is routed into it.

Every line carries the request id and message id of the work it is about, when
there is one (`log_context`): the API sets the request id per request, the
workers set both per message, so `grep <request id>` follows one request from
the HTTP answer to the worker that wrote its rows. `LOG_FORMAT=json` prints one
JSON object per line for log shippers; `text` is for people.
"""

from __future__ import annotations

import logging
import sys
import traceback
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Iterator

import orjson
from loguru import logger

#: The request being served (API) or whose message is being processed (workers).
REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
#: The Dramatiq message being processed (workers).
MESSAGE_ID: ContextVar[str | None] = ContextVar("message_id", default=None)

_TEXT_FORMAT = "{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <8} | {extra[logger]} | {message}"


@contextmanager
def log_context(*, request_id: str | None = None, message_id: str | None = None) -> Iterator[None]:
    """Tag every log line inside the block (same thread or task) with these ids."""
    tokens = (REQUEST_ID.set(request_id), MESSAGE_ID.set(message_id))
    try:
        yield
    finally:
        MESSAGE_ID.reset(tokens[1])
        REQUEST_ID.reset(tokens[0])


def _add_context(record: dict[str, Any]) -> None:
    extra = record["extra"]
    extra.setdefault("logger", record["name"])
    request_id, message_id = REQUEST_ID.get(), MESSAGE_ID.get()
    if request_id is not None:
        extra.setdefault("request_id", request_id)
    if message_id is not None:
        extra.setdefault("message_id", message_id)


def _text_format(record: dict[str, Any]) -> str:
    ids = "".join(f" {name}={{extra[{name}]}}" for name in ("request_id", "message_id") if name in record["extra"])
    suffix = f" |{ids}" if ids else ""
    return _TEXT_FORMAT + suffix + "\n{exception}"


def _json_line(record: dict[str, Any]) -> bytes:
    line: dict[str, Any] = {
        "time": record["time"].isoformat(),
        "level": record["level"].name,
        "message": record["message"],
        **record["extra"],
        "process": record["process"].id,
        "thread": record["thread"].name,
    }
    if record["exception"] is not None:
        error = record["exception"]
        line["exception"] = "".join(traceback.format_exception(error.type, error.value, error.traceback))
    return orjson.dumps(line, default=str) + b"\n"


def _json_sink(message) -> None:
    # One write per line, under loguru's per-handler lock: lines of concurrent threads never mix.
    # sys.stderr is looked up each time: in dramatiq's workers it is a pipe to the CLI's process.
    sys.stderr.write(_json_line(message.record).decode())
    sys.stderr.flush()


def _text_sink(message: str) -> None:
    sys.stderr.write(message)
    sys.stderr.flush()


class _ToLoguru(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        logger.bind(logger=record.name).opt(exception=record.exc_info).log(level, record.getMessage())


def uvicorn_handler() -> logging.Handler:
    """For uvicorn's `--log-config` (app/uvicorn_logging.json): its loggers into loguru.

    uvicorn applies its logging config before it imports the app, in every
    process (its supervisor too), so this is where its lines get our format.
    """
    from config import get_settings

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    return _ToLoguru()


def configure_logging(level: str = "INFO", log_format: str = "text") -> None:
    logger.remove()
    logger.configure(patcher=_add_context)
    if log_format == "json":
        logger.add(_json_sink, level=level.upper(), format="{message}")
    else:
        logger.add(_text_sink, level=level.upper(), format=_text_format)
    logging.basicConfig(handlers=[_ToLoguru()], level=level.upper(), force=True)
    logging.getLogger("pika").setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error"):
        # uvicorn's own handlers (if its default config ran) would print a second, unformatted copy.
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    # The app logs each request itself (app/request_context.py), with its request id.
    logging.getLogger("uvicorn.access").handlers.clear()
    logging.getLogger("uvicorn.access").propagate = False


if __name__ == "__main__":
    # `python -m logs dramatiq ARGS...`: the dramatiq CLI, with the lines of its own (parent)
    # process in our format too. Its `logging.basicConfig` is a no-op once ours has run, and the
    # worker processes it forks configure themselves again when they import `actors`.
    from config import get_settings

    if sys.argv[1:2] != ["dramatiq"]:
        sys.exit("usage: python -m logs dramatiq [dramatiq CLI arguments]")
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    from dramatiq.cli import main

    sys.argv = sys.argv[1:]
    sys.exit(main())
