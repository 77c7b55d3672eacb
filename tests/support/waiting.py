"""Wait on a condition with a deadline; never sleep and hope."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    condition: Callable[[], T], *, timeout: float, interval: float = 0.1, what: str | Callable[[], str] = "condition"
) -> T:
    """Return the first truthy value of `condition()`; fail after `timeout` seconds.

    `what` may be a callable, evaluated only on failure: it can then report the last state seen.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = condition()
            if value:
                return value
        except Exception as error:  # the condition may fail until the thing it checks exists
            last_error = error
        if time.monotonic() >= deadline:
            described = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {described} (last error: {last_error!r})")
        time.sleep(interval)
