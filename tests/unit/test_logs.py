"""logs.py: JSON lines carry the request and message ids; standard-library records are routed in."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from loguru import logger

import logs
from logs import BatchedStderr, configure_logging, flush_logs, log_context
from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]


class Stderr:
    """What the sinks wrote (they look sys.stderr up per batch, so capsys sees it)."""

    def __init__(self, capsys):
        self.capsys = capsys

    def getvalue(self) -> str:
        flush_logs()
        return self.capsys.readouterr().err


@pytest.fixture()
def stderr(capsys):
    flush_logs()  # lines earlier tests left queued are not this test's
    logs._repeats.forget()
    capsys.readouterr()
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


def test_info_lines_wait_for_the_batch_and_a_warning_takes_them_out_in_order(stderr, monkeypatch):
    configure_logging("INFO", "text")
    batched = BatchedStderr()
    batched.FLUSH_INTERVAL_SECONDS = 3600  # no timer flush in this test (this instance only)
    monkeypatch.setattr(logs, "_stderr", batched)
    logger.info("first")
    logger.info("second")
    assert stderr.capsys.readouterr().err == ""  # queued, not yet written
    logger.warning("third")
    lines = stderr.capsys.readouterr().err.splitlines()
    assert [line.split(" | ")[-1] for line in lines] == ["first", "second", "third"]
    logger.info("fourth")
    logging.getLogger("dramatiq.worker.Worker").info("Worker has been shut down.")  # lifecycle: at once
    lines = stderr.capsys.readouterr().err.splitlines()
    assert [line.split(" | ")[-1] for line in lines] == ["fourth", "Worker has been shut down."]


def test_the_timer_writes_info_lines_without_a_warning(stderr):
    configure_logging("INFO", "text")
    logger.info("soon")
    written = wait_for(lambda: stderr.capsys.readouterr().err or None, timeout=5, what="the timer's flush")
    assert written.rstrip().endswith("soon")


EXITS = {
    # A plain interpreter exit runs atexit.
    "python": "import logs; from loguru import logger; logs.configure_logging('INFO', 'text'); logger.info('bye')",
    # dramatiq's worker processes are multiprocessing children: they leave through os._exit.
    "multiprocessing child": (
        "import multiprocessing, logs; from loguru import logger\n"
        "def child():\n"
        "    logs.configure_logging('INFO', 'text'); logger.info('bye')\n"
        "if __name__ == '__main__':\n"
        "    p = multiprocessing.get_context('fork').Process(target=child); p.start(); p.join()\n"
    ),
}


@pytest.mark.parametrize("kind", EXITS)
def test_a_process_that_exits_writes_its_queued_lines(kind):
    result = subprocess.run(
        [sys.executable, "-c", EXITS[kind]], cwd=ROOT, capture_output=True, text=True, timeout=30,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.rstrip().endswith("bye"), result.stderr


# -- no payloads, no floods -------------------------------------------------------------------


def test_dramatiqs_failure_line_names_the_message_not_its_arguments(stderr):
    import dramatiq

    message = dramatiq.Message(queue_name="ingest", actor_name="write_detection_rows",
                               args=({"image_frame": "SECRET-FRAME"},), kwargs={}, options={})
    try:
        raise OSError(28, "No space left on device")
    except OSError:
        logging.getLogger("dramatiq.worker.WorkerThread").error(
            "Failed to process message %s with unhandled exception.", message, exc_info=True)
    text = stderr.getvalue()
    assert f"Failed to process message write_detection_rows({message.message_id})" in text
    assert "No space left on device" in text and "SECRET-FRAME" not in text


def test_a_traceback_shows_no_variables(stderr):
    def fails(payload):
        frame = payload["image_frame"]
        raise ValueError(f"bad frame of {len(frame)} characters")

    for log_format in ("text", "json"):
        configure_logging("INFO", log_format)
        secret = "-".join(["SECRET", "FRAME"])  # not in this file's text, which a traceback quotes
        try:
            fails({"image_frame": secret})
        except ValueError:
            logger.exception("write failed ({})", log_format)
        text = stderr.getvalue()
        assert "bad frame of 12 characters" in text and "SECRET-FRAME" not in text, log_format


def test_a_repeated_error_is_written_once_then_counted(stderr, monkeypatch):
    monkeypatch.setattr(logs.RepeatedLines, "WINDOW_SECONDS", 0.2)
    for index in range(300):
        with log_context(message_id=f"m-{index}"):
            try:
                raise OSError(28, "No space left on device")
            except OSError:
                logger.exception("could not write the rows of message m-{}", index)
    logger.warning("another kind of line")
    seen: list[str] = []  # getvalue() hands out what is new each time
    wait_for(lambda: seen.append(stderr.getvalue()) or "299 more like" in "".join(seen), timeout=5,
             what="the count of the lines held back")
    summary = "".join(seen)
    lines = [line for line in summary.splitlines() if "| ERROR" in line]
    assert len(lines) == 2 and "could not write the rows of message m-0" in lines[0]
    assert "299 more like: could not write the rows of message m-0" in lines[1]
    assert "another kind of line" in summary, "other lines are not held back"
    logger.info("info lines are never held back")
    logger.info("info lines are never held back")
    assert stderr.getvalue().count("info lines are never held back") == 2


def test_a_signal_handler_that_logs_while_a_line_is_being_written_does_not_deadlock(stderr, monkeypatch):
    """dramatiq's CLI logs from its SIGTERM handler; a second signal during that write re-entered
    the flush, which then waited for its own lock forever (a hung worker group, seen in CI)."""
    entered = []

    class SlowStream:
        def write(self, text):
            if not entered:
                entered.append(text)
                logging.getLogger("dramatiq.cli").info("Stopping fork process...")  # as a handler would, mid-write
            sys.__stderr__.write("")  # nothing to see; just a stream

        def flush(self):
            pass

    monkeypatch.setattr(sys, "stderr", SlowStream())
    done = threading.Event()
    worker = threading.Thread(target=lambda: (logging.getLogger("dramatiq.cli").info("Shutting down"), done.set()),
                              daemon=True)
    worker.start()
    worker.join(timeout=5)
    assert done.is_set(), "the nested flush waited for itself"


@pytest.fixture()
def clock(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(logs._repeats, "_clock", lambda: now[0])
    return now


def test_a_count_is_written_even_when_the_next_like_line_arrives_before_the_writer_looked(stderr, clock):
    """A steady burst: the window ends and a new line replaces it within the writer's 50 ms."""
    logger.error("disk full writing m-1")
    clock[0] += 0.5
    logger.error("disk full writing m-2")  # held back
    with logs._repeats._lock:  # the writer thread cannot look in between
        clock[0] += 0.6
        logger.error("disk full writing m-3")  # a new window
    clock[0] += 1.1
    seen: list[str] = []
    wait_for(lambda: seen.append(stderr.getvalue()) or "1 more like: disk full writing m-1" in "".join(seen),
             timeout=5, what="the first window's count")


def test_counts_of_windows_still_open_are_written_at_exit(stderr, clock):
    for index in range(3):
        logger.error("disk full writing m-{}", index)
    logs._stderr.flush_at_exit()
    assert "2 more like: disk full writing m-0" in stderr.getvalue()


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_info_line_writes_what_loguru_would_for_the_same_line(stderr, log_format):
    configure_logging("INFO", log_format)
    fields = {"method": "POST", "path": "/a{b}\n/c", "status": 202, "duration_ms": 1.5}
    text = "POST /a{b}\n/c 202 1.5 ms"
    logs.API_KEY.set("key-1")
    logs.TENANT.set("tenant-1")
    try:
        with log_context(request_id="req-9"):
            logger.bind(logger="app.request_context", **fields).info("{}", text)
            logs.info_line("app.request_context", text, **fields)
    finally:
        logs.API_KEY.set(None)
        logs.TENANT.set(None)
    by_loguru, direct = stderr.getvalue().splitlines()
    if log_format == "json":
        by_loguru, direct = json.loads(by_loguru), json.loads(direct)
        assert direct.pop("time")[:10] == by_loguru.pop("time")[:10]
        assert direct == by_loguru and direct["path"] == "/a{b}\n/c"
    else:
        assert len(direct) == len(by_loguru) and direct[23:] == by_loguru[23:]  # all but the time
        assert direct.endswith("| POST /a{b}\\n/c 202 1.5 ms | request_id=req-9 key=key-1 tenant=tenant-1")


def test_info_line_follows_the_level(stderr):
    configure_logging("WARNING", "text")
    logs.info_line("app.request_context", "quiet")
    assert stderr.getvalue() == ""


def test_an_info_line_that_cannot_be_written_is_dropped_without_failing_its_caller(stderr):
    configure_logging("INFO", "json")
    logs.info_line("app.request_context", "GET /\ud800 200 1.0 ms", path="/\ud800")  # not UTF-8: orjson refuses
    logs.info_line("app.request_context", "after")
    assert [json.loads(line)["message"] for line in stderr.getvalue().splitlines()] == ["after"]


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_info_line_lets_a_field_win_over_the_context_and_hides_private_ones_as_loguru_does(stderr, log_format):
    configure_logging("INFO", log_format)
    fields = {"request_id": "given", "_private": "x"}
    with log_context(request_id="from-context"):
        logger.bind(logger="app.request_context", **fields).info("{}", "hello")
        logs.info_line("app.request_context", "hello", **fields)
    by_loguru, direct = stderr.getvalue().splitlines()
    if log_format == "json":
        by_loguru, direct = json.loads(by_loguru), json.loads(direct)
        del by_loguru["time"], direct["time"]
        assert direct == by_loguru and direct["request_id"] == "given" and "_private" not in direct
    else:
        assert direct[23:] == by_loguru[23:] and direct.endswith("hello | request_id=given")
