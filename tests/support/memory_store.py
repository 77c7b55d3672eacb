"""An IdempotencyStore without Redis, for tests that call the app in-process."""

from __future__ import annotations


class MemoryStore:
    """Same interface as app.idempotency.IdempotencyStore: remembers accepted keys in a dict."""

    def __init__(self):
        self.records = {}

    async def lookup(self, key):
        return self.records.get(key)

    async def remember(self, key, accepted):
        self.records.setdefault(key, accepted)
