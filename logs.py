"""loguru everywhere: standard-library logging (uvicorn, dramatiq, pika) is routed into it.

Every line carries the request id and message id of the work it is about, when
there is one (`log_context`): the API sets the request id per request, the
workers set both per message, so `grep <request id>` follows one request from
the HTTP answer to the worker that wrote its rows. `LOG_FORMAT=json` prints one
JSON object per line for log shippers; `text` is for people.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing.util
import os
import re
import sys
import threading
import time
import traceback
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from typing import Any, Iterator

import orjson
from loguru import logger

#: The request being served (API) or whose message is being processed (workers).
REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
#: The Dramatiq message being processed (workers).
MESSAGE_ID: ContextVar[str | None] = ContextVar("message_id", default=None)
#: The name of the API key that made the request, or that sent the message (never its secret).
API_KEY: ContextVar[str | None] = ContextVar("key", default=None)
#: The tenant of that key, where keys have tenants.
TENANT: ContextVar[str | None] = ContextVar("tenant", default=None)

#: Lines at this level or above are written at once, not with the next batch.
_URGENT_LEVEL = logging.WARNING

#: `{extra[line]}`, not `{message}`: the message with control characters escaped (`_text_format`).
_TEXT_FORMAT = "{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <8} | {extra[logger]} | {extra[line]}"


def escape_controls(text: str) -> str:
    """`text` on one line: a control character (a `%0A` decoded from a request path, say) becomes
    its escape, so no input can forge a second log line in the text format."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


@contextmanager
def log_context(*, request_id: str | None = None, message_id: str | None = None) -> Iterator[None]:
    """Tag every log line inside the block (same thread or task) with these ids."""
    tokens = (REQUEST_ID.set(request_id), MESSAGE_ID.set(message_id))
    try:
        yield
    finally:
        MESSAGE_ID.reset(tokens[1])
        REQUEST_ID.reset(tokens[0])


def _context_ids() -> list[tuple[str, str]]:
    """The ids of the work at hand, in the order a text line names them."""
    request_id, message_id, key, tenant = REQUEST_ID.get(), MESSAGE_ID.get(), API_KEY.get(), TENANT.get()
    ids = []
    if request_id is not None:
        ids.append(("request_id", request_id))
    if message_id is not None:
        ids.append(("message_id", message_id))
    if key:
        ids.append(("key", key))
    if tenant and tenant != key:  # a key's tenant is its own name unless it was given one
        ids.append(("tenant", tenant))
    return ids


def _add_context(record: dict[str, Any]) -> None:
    extra = record["extra"]
    extra.setdefault("logger", record["name"])
    for name, value in _context_ids():
        extra.setdefault(name, value)


#: The ids a text line names after its message, in this order (the JSON line has every field).
_ID_FIELDS = ("request_id", "message_id", "key", "tenant")


def _text_format(record: dict[str, Any]) -> str:
    # Here, not in the patcher every sink runs: JSON escapes control characters itself.
    record["extra"]["line"] = escape_controls(record["message"])
    ids = "".join(f" {name}={{extra[{name}]}}" for name in _ID_FIELDS if name in record["extra"])
    suffix = f" |{ids}" if ids else ""
    return _TEXT_FORMAT + suffix + "\n{exception}"


def _json_text(line: dict[str, Any]) -> str:
    return (orjson.dumps(line, default=str) + b"\n").decode()


def _json_line(record: dict[str, Any]) -> str:
    line: dict[str, Any] = {
        "time": record["time"].isoformat(),
        "level": record["level"].name,
        "message": record["message"],  # JSON escapes control characters itself
        **{name: value for name, value in record["extra"].items() if not name.startswith("_")},
        "process": record["process"].id,
        "thread": record["thread"].name,
    }
    if record["exception"] is not None:
        error = record["exception"]
        line["exception"] = "".join(traceback.format_exception(error.type, error.value, error.traceback))
    return _json_text(line)


_IDS = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F-]{27}|[0-9a-f]{32}|\d+")


class RepeatedLines:
    """A warning or error that repeats is written once per WINDOW_SECONDS, then with a count.

    A full disk fails every message the same way: hundreds of identical lines a
    second, each a few KB with its traceback. Lines are alike when their
    logger, level, text (ids and numbers aside; for standard-library lines the
    template, e.g. dramatiq's "Failed to process message %s ...") and
    exception type and text are. The first is written; the rest of the window
    are counted, and the count is written when the window ends (by the log
    writer's thread, so a burst that stops still says how big it was).
    """

    WINDOW_SECONDS = 1.0

    def __init__(self) -> None:
        self._lock = threading.RLock()  # reentrant: a signal handler may log while this thread holds it
        #: key -> [window start, lines held back, (level, text, ids) of the first line]; not the record
        #: itself, whose traceback would keep the failing frames (and their payloads) alive.
        self._windows: dict[tuple, list] = {}
        #: Ended windows with lines held back, replaced by a new line before `report_due` saw them.
        self._due: list[list] = []
        self._clock = time.monotonic

    @staticmethod
    def _key(record: dict[str, Any]) -> tuple:
        extra = record["extra"]
        text = extra.get("_template") or _IDS.sub("#", record["message"])
        error = record["exception"]
        failure = (error.type.__name__, _IDS.sub("#", str(error.value))) if error is not None else None
        return extra.get("logger"), record["level"].no, text, failure

    def allow(self, record: dict[str, Any]) -> bool:
        """loguru's filter: False for a line already written in this window."""
        if record["level"].no < logging.WARNING or record["extra"].get("_summary"):
            return True
        key = self._key(record)
        now = self._clock()
        with self._lock:
            window = self._windows.get(key)
            if window is not None and now - window[0] < self.WINDOW_SECONDS:
                window[1] += 1
                return False
            if window is not None and window[1]:
                self._due.append(window)  # its count is still to be written
            ids = {name: value for name, value in record["extra"].items() if not name.startswith("_")}
            self._windows[key] = [now, 0, (record["level"].name, record["message"], ids)]
        return True

    def forget(self) -> None:
        """Drop every window, counts unreported (tests)."""
        with self._lock:
            self._windows.clear()
            self._due.clear()

    def report_due(self, *, everything: bool = False) -> None:
        """Write the count of each window that has ended with lines held back (`everything`: of
        every window, ended or not, as the process exits)."""
        now = self._clock()
        with self._lock:
            ended = [key for key, window in self._windows.items()
                     if everything or now - window[0] >= self.WINDOW_SECONDS]
            due = self._due + [self._windows.pop(key) for key in ended]
            self._due = []
        for started, held, (level, text, ids) in due:
            if held:
                logger.bind(**ids, _summary=True).log(level, "{} more like: {} (in {:.1f} s)", held, text, now - started)


_repeats = RepeatedLines()


class BatchedStderr:
    """Log lines leave in batches: one write every few milliseconds, not one per line.

    Why: a worker logs a line per message from many threads, and under the
    dramatiq CLI each write is a message on a pipe that its parent process
    wakes up to copy to its own stderr. Written one by one, that costed the
    workers about 15% of their CPU (bench/RESULTS.md). Warnings and errors,
    and every line of the standard-library loggers (the lifecycle of uvicorn
    and dramatiq), still go out at once, with everything queued before them; a process that
    exits normally flushes what is left, one killed outright loses at most
    the last FLUSH_INTERVAL_SECONDS of info lines.
    """

    FLUSH_INTERVAL_SECONDS = 0.05
    MAX_PENDING_BYTES = 64 * 1024

    def __init__(self) -> None:
        self._pending: list[str] = []
        self._size = 0
        # Signal handlers log too (dramatiq's CLI on SIGTERM, in whichever thread holds these at that
        # moment): `_lock` is reentrant, and a flush re-entered from a handler leaves its lines to the
        # flush it interrupted or the next one, instead of waiting for itself forever.
        self._lock = threading.RLock()  # guards _pending
        self._write_lock = threading.RLock()  # keeps batches in order; reentrant for the same reason
        self._writing_thread: int | None = None
        self._owner_pid: int | None = None
        self._wake = threading.Event()

    def write(self, text: str, *, urgent: bool = False) -> None:
        self._ensure_flusher()
        with self._lock:
            self._pending.append(text)
            self._size += len(text)
            full = self._size >= self.MAX_PENDING_BYTES
        if urgent or full:
            self.flush()

    def flush(self) -> None:
        me = threading.get_ident()
        if self._writing_thread == me:
            return  # re-entered from a signal handler mid-write: those lines go out with the next flush
        with self._write_lock:  # (re-entered before the next line marks it: it writes, nothing is mid-write)
            outer = self._writing_thread
            self._writing_thread = me
            try:
                self._write_pending()
            finally:
                self._writing_thread = outer

    def _write_pending(self) -> None:
        with self._lock:
            if not self._pending:
                return
            text = "".join(self._pending)
            self._pending.clear()
            self._size = 0
        # Looked up each time: in dramatiq's workers sys.stderr is a pipe to the CLI's
        # process, and tests swap it for a capture.
        stream = sys.stderr
        try:
            stream.write(text)
            stream.flush()
        except (OSError, ValueError):  # a closed stream at exit: nowhere left to write
            pass

    def _ensure_flusher(self) -> None:
        if self._owner_pid == os.getpid():
            return
        with self._lock:
            if self._owner_pid == os.getpid():
                return
            # A forked child starts with its parent's unwritten lines: the parent writes them.
            self._pending.clear()
            self._size = 0
            self._owner_pid = os.getpid()
        threading.Thread(target=self._flush_forever, name="log-writer", daemon=True).start()
        atexit.register(self.flush_at_exit)
        # multiprocessing children (dramatiq's worker processes) leave through os._exit,
        # which skips atexit but runs multiprocessing's own finalizers.
        multiprocessing.util.Finalize(None, self.flush_at_exit, exitpriority=0)

    def flush_at_exit(self) -> None:
        """The counts of lines held back in the last second, then everything queued."""
        _repeats.report_due(everything=True)
        self.flush()

    def _flush_forever(self) -> None:
        while True:
            time.sleep(self.FLUSH_INTERVAL_SECONDS)
            try:
                _repeats.report_due()
                self.flush()
            except Exception:  # nowhere to say so; the next round tries again
                pass


_stderr = BatchedStderr()


def _fresh_locks_in_child() -> None:
    """A fork copies locks as they are: one held by another thread at that moment (the log writer's,
    mid-flush) would stay held in the child forever, and its first log line would wait for it."""
    _stderr._lock = threading.RLock()
    _stderr._write_lock = threading.RLock()
    _stderr._writing_thread = None
    _repeats._lock = threading.RLock()
    _repeats._windows.clear()
    _repeats._due.clear()


os.register_at_fork(after_in_child=_fresh_locks_in_child)


def flush_logs() -> None:
    """Write out the lines still queued (tests, and before handing stderr to someone else)."""
    _stderr.flush()


def _json_sink(message) -> None:
    record = message.record
    _stderr.write(_json_line(record), urgent=record["level"].no >= _URGENT_LEVEL)


def _text_sink(message) -> None:
    _stderr.write(message, urgent=message.record["level"].no >= _URGENT_LEVEL)


def _without_payloads(args: Any) -> Any:
    """Dramatiq formats a message into its lines with `%s`, which prints the actor's arguments: a
    whole payload, ~45 KB of frames. Such an argument becomes `actor(message id)`."""
    if not isinstance(args, tuple):
        return args
    return tuple(f"{arg.actor_name}({arg.message_id})" if hasattr(arg, "actor_name") and hasattr(arg, "message_id")
                 else arg for arg in args)


class _ToLoguru(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        record.args = _without_payloads(record.args)
        logger.bind(logger=record.name, _template=str(record.msg)).opt(exception=record.exc_info).log(
            level, record.getMessage())
        # Lifecycle lines (uvicorn's, dramatiq's) go out at once: a worker process logs its
        # last ones just before dramatiq's CLI closes the pipe its stderr is.
        _stderr.flush()


def uvicorn_handler() -> logging.Handler:
    """For uvicorn's `--log-config` (app/uvicorn_logging.json): its loggers into loguru.

    uvicorn applies its logging config before it imports the app, in every
    process (its supervisor too), so this is where its lines get our format.
    """
    from config import get_settings

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    return _ToLoguru()


#: How info_line writes: through loguru until configure_logging has set up our sink, then in
#: LOG_FORMAT, or not at all when the level leaves INFO lines out.
_info_format: str | None = "loguru"


def info_line(name: str, text: str, **fields: Any) -> None:
    """An INFO line of logger `name`, as `logger.bind(logger=name, **fields).info("{}", text)` writes it
    (the fields as JSON keys, the context's ids), but without loguru's record machinery.

    Why: the API writes one such line for every request (its access line), and
    loguru's record building, patcher and formatter were ~12 us of its ~15
    (bench/RESULTS.md). Written straight into our batched sink, in the same
    format; tests/unit/test_logs.py holds the two ways of writing to the same
    line. Only our sink sees it: a sink added to loguru besides ours does not,
    and until configure_logging has run it is an ordinary loguru line.
    """
    if _info_format is None:
        return
    if _info_format == "loguru":
        logger.bind(logger=name, **fields).info("{}", text)  # the text is not a template
        return
    try:
        _write_info_line(name, text, fields)
    except Exception:  # as a loguru sink's failure: the line is lost, never the request
        pass


def _write_info_line(name: str, text: str, fields: dict[str, Any]) -> None:
    extra = {"logger": name, **fields}  # as bound, then the context's ids where not given (_add_context)
    for key, value in _context_ids():
        extra.setdefault(key, value)
    if _info_format == "json":
        line = {"time": datetime.now().astimezone().isoformat(), "level": "INFO", "message": text,
                **{key: value for key, value in extra.items() if not key.startswith("_")},
                "process": os.getpid(), "thread": threading.current_thread().name}
        _stderr.write(_json_text(line))
        return
    now = datetime.now()
    ids = "".join(f" {key}={extra[key]}" for key in _ID_FIELDS if key in extra)
    _stderr.write(f"{now:%Y-%m-%d %H:%M:%S}.{now.microsecond // 1000:03d} | INFO     | {name} | "
                  f"{escape_controls(text)}{' |' + ids if ids else ''}\n")


def configure_logging(level: str = "INFO", log_format: str = "text") -> None:
    global _info_format
    logger.remove()
    logger.configure(patcher=_add_context)
    if log_format == "json":
        logger.add(_json_sink, level=level.upper(), format="{message}", filter=_repeats.allow,
                   diagnose=False, backtrace=False)
    else:
        logger.add(_text_sink, level=level.upper(), format=_text_format, filter=_repeats.allow,
                   diagnose=False, backtrace=False)
    logging.basicConfig(handlers=[_ToLoguru()], level=level.upper(), force=True)
    logging.getLogger("pika").setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error"):
        # uvicorn's own handlers (if its default config ran) would print a second, unformatted copy.
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    # The app logs each request itself (app/request_context.py), with its request id.
    logging.getLogger("uvicorn.access").handlers.clear()
    logging.getLogger("uvicorn.access").propagate = False
    _info_format = log_format if logger.level(level.upper()).no <= logging.INFO else None


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
