"""actors/encoding.py: the message encoder's errors never quote the message."""

from __future__ import annotations

import pytest
from dramatiq.errors import DecodeError

from actors.encoding import OrjsonEncoder


def test_a_message_that_is_not_json_is_refused_by_size_without_its_bytes():
    body = b'{"args": ["secret-frame-AAAA", ' + b"x" * 500
    with pytest.raises(DecodeError) as raised:
        OrjsonEncoder().decode(body)
    text = str(raised.value)
    assert f"{len(body)} bytes" in text
    assert "secret-frame" not in text and "xxxx" not in text
