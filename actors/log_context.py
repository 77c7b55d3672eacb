"""Worker log lines name the message they are about, and the request it came from."""

from __future__ import annotations

from dramatiq.middleware import Middleware

from logs import API_KEY, MESSAGE_ID, REQUEST_ID, TENANT


class LogContext(Middleware):
    """Set logs.MESSAGE_ID, logs.REQUEST_ID (the API's X-Request-ID), logs.API_KEY (the name of
    the key that sent it) and logs.TENANT while a message runs.

    Dramatiq runs each message start to finish on one worker thread, so plain
    context variables, set before and cleared after, scope them exactly.
    """

    def before_process_message(self, broker, message) -> None:
        MESSAGE_ID.set(message.message_id)
        REQUEST_ID.set(message.options.get("request_id"))
        API_KEY.set(message.options.get("key"))
        TENANT.set(message.options.get("tenant"))

    def after_process_message(self, broker, message, *, result=None, exception=None) -> None:
        MESSAGE_ID.set(None)
        REQUEST_ID.set(None)
        API_KEY.set(None)
        TENANT.set(None)

    after_skip_message = after_process_message
