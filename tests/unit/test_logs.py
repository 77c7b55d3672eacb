"""logs.py: JSON lines carry the request and message ids; standard-library records are routed in."""

from __future__ import annotations

import json
import logging

import pytest
from loguru import logger

from logs import configure_logging, log_context


class Stderr:
    """What the sinks wrote (they look sys.stderr up per line, so capsys sees it)."""

    def __init__(self, capsys):
        self.capsys = capsys

    def getvalue(self) -> str:
        return self.capsys.readouterr().err


@pytest.fixture()
def stderr(capsys):
    yield Stderr(capsys)
    configure_logging("INFO", "text")


def test_json_format_is_one_object_per_line_with_the_ids_of_the_context(stderr):
    configure_logging("INFO", "json")
    with log_context(request_id="req-1", message_id="msg-1"):
        logger.info("wrote {} rows", 3)
    logger.info("outside")
    first, second = (json.loads(line) for line in stderr.getvalue().splitlines())
    assert first["message"] == "wrote 3 rows" and first["request_id"] == "req-1" and first["message_id"] == "msg-1"
    assert "request_id" not in second and "message_id" not in second


def test_json_keeps_a_multiline_message_and_traceback_on_one_line(stderr):
    configure_logging("INFO", "json")
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        logger.exception("failed\nhere")
    (line,) = stderr.getvalue().splitlines()
    record = json.loads(line)
    assert record["message"] == "failed\nhere" and "ValueError: bad\nvalue" in record["exception"]


def test_standard_library_logging_goes_through_loguru_with_its_logger_name(stderr):
    configure_logging("INFO", "json")
    with log_context(request_id="req-2"):
        logging.getLogger("dramatiq.worker.WorkerThread").warning("retrying %s", "m-9")
    record = json.loads(stderr.getvalue())
    assert record["logger"] == "dramatiq.worker.WorkerThread"
    assert record["message"] == "retrying m-9" and record["level"] == "WARNING" and record["request_id"] == "req-2"


def test_text_format_names_the_ids_for_grep(stderr):
    configure_logging("INFO", "text")
    with log_context(request_id="req-3", message_id="msg-3"):
        logger.info("hello")
    assert stderr.getvalue().rstrip().endswith("hello | request_id=req-3 message_id=msg-3")


def test_the_level_filters(stderr):
    configure_logging("WARNING", "json")
    logger.info("quiet")
    logging.getLogger("uvicorn.error").info("quiet too")
    assert stderr.getvalue() == ""
