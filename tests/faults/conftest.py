"""Fault tests get a vhost and a stack of their own: they kill things."""

from __future__ import annotations

import pytest

from tests.support.rabbit import create_vhost, delete_vhost, vhost_url
from tests.support.stack import Stack


@pytest.fixture()
def make_stack(tmp_path):
    made: list[tuple[Stack, str]] = []

    def make(**settings: str) -> Stack:
        vhost = create_vhost("fault")
        stack = Stack(tmp_path, vhost_url(vhost), processes=2, threads=8, **settings)
        made.append((stack, vhost))
        return stack

    yield make
    for stack, vhost in made:
        stack.stop()
        delete_vhost(vhost)
