"""Worker log lines name the message they are about, and the request it came from."""

from __future__ import annotations

from dramatiq.middleware import Middleware

from logs import MESSAGE_ID, REQUEST_ID


class LogContext(Middleware):
    """Set logs.MESSAGE_ID and logs.REQUEST_ID (the API's X-Request-ID) while a message runs.

    Dramatiq runs each message start to finish on one worker thread, so plain
    context variables, set before and cleared after, scope them exactly.
    """

    def before_process_message(self, broker, message) -> None:
        MESSAGE_ID.set(message.message_id)
        REQUEST_ID.set(message.options.get("request_id"))

    def after_process_message(self, broker, message, *, result=None, exception=None) -> None:
        MESSAGE_ID.set(None)
        REQUEST_ID.set(None)

    after_skip_message = after_process_message
