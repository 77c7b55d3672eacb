"""Unit tests never publish to a real RabbitMQ: that is what the integration tests are for."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def no_real_publishing(monkeypatch):
    """A unit test that reaches the real publisher fails, instead of leaving messages in vhost `/`.

    Tests that exercise the publish path replace `publish_message` themselves.
    """
    from actors import broker

    def refuse(message, **options):
        raise AssertionError(f"a unit test published {message.actor_name} to RabbitMQ; replace publishing")

    monkeypatch.setattr(broker, "publish_message", refuse)
