"""Which requests the fast path of POST /api answered itself (the rest went on to the FastAPI route)."""

from __future__ import annotations

import app.fast_ingest


def spy_on_fast_answers(patch) -> list[int]:
    """The statuses app.fast_ingest answers from now on; `patch` is a pytest MonkeyPatch."""
    answered: list[int] = []
    original = app.fast_ingest._answer

    async def spy(send, status, content, headers=None):
        answered.append(status)
        await original(send, status, content, headers)

    patch.setattr(app.fast_ingest, "_answer", spy)
    return answered
