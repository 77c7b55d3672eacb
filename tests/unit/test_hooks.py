"""OverriddenHooksOnly sends each signal to the middleware that have the hook, as Dramatiq would."""

from __future__ import annotations

import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import Middleware, SkipMessage

from actors.hooks import OverriddenHooksOnly


class Broker(OverriddenHooksOnly, StubBroker):
    pass


class Recorder(Middleware):
    def __init__(self, name: str, calls: list):
        self.name, self.calls = name, calls

    def before_process_message(self, broker, message):
        self.calls.append(("before", self.name, message))

    def after_process_message(self, broker, message, *, result=None, exception=None):
        self.calls.append(("after", self.name, result))


class Silent(Middleware):
    """Has no hooks of its own: once the hook lists are built, never touched again."""

    armed = False

    def __getattribute__(self, name):
        if name.startswith(("before_process", "after_process")) and object.__getattribute__(self, "armed"):
            raise AssertionError(f"{name} of a middleware without it was looked up at emit time")
        return super().__getattribute__(name)


def test_hooks_run_in_dramatiqs_order_and_no_op_hooks_are_skipped():
    calls: list = []
    broker = Broker(middleware=[Recorder("a", calls), Recorder("b", calls)])
    broker.emit_before("process_message", "m")  # the lists are built before Silent arrives
    silent = Silent()
    broker.add_middleware(silent)
    broker.add_middleware(Recorder("c", calls))
    broker.emit_before("process_message", "m")
    broker.emit_after("process_message", "m", result=1)
    silent.armed = True
    calls.clear()
    broker.emit_before("process_message", "m")
    broker.emit_after("process_message", "m", result=1)
    assert calls == [("before", "a", "m"), ("before", "b", "m"), ("before", "c", "m"),
                     ("after", "c", 1), ("after", "b", 1), ("after", "a", 1)]


def test_a_skip_from_a_before_hook_propagates_and_other_errors_are_logged_and_passed(caplog):
    class Skipper(Middleware):
        def before_process_message(self, broker, message):
            raise SkipMessage()

    class Broken(Middleware):
        def after_process_message(self, broker, message, *, result=None, exception=None):
            raise ValueError("boom")

    calls: list = []
    broker = Broker(middleware=[Recorder("a", calls), Broken(), Skipper()])
    with pytest.raises(SkipMessage):
        broker.emit_before("process_message", "m")
    broker.emit_after("process_message", "m", result=2)
    assert calls[-1] == ("after", "a", 2), "the hook after the broken one still ran"
    assert "Unexpected failure in after_process_message" in caplog.text


def test_the_broker_the_actors_use_dispatches_this_way():
    from actors import broker

    assert isinstance(broker, OverriddenHooksOnly)
    names = [type(m).__name__ for _, m in broker._hooks("before_process_message")]
    assert "DeliveryLimit" in names and "Callbacks" not in names
