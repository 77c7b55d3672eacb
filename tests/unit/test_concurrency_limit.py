"""app.limits.ConcurrencyLimit: requests in flight are bounded, the next gets 503 with Retry-After at once."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from app.limits import ConcurrencyLimit


def test_requests_over_the_limit_get_503_with_retry_after_and_health_still_answers():
    release = asyncio.Event()

    async def slow_app(scope, receive, send):
        if scope["path"] not in ConcurrencyLimit.EXEMPT:
            await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    limited = ConcurrencyLimit(slow_app, limit=2)

    async def scenario():
        transport = httpx.ASGITransport(app=limited)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            held = [asyncio.create_task(client.get("/api/x")) for _ in range(2)]
            while limited.active < 2:
                await asyncio.sleep(0.001)
            refused = await client.get("/api/y")
            health = await client.get("/health")
            release.set()
            finished = await asyncio.gather(*held)
            after = await client.get("/api/z")
        return refused, health, finished, after

    refused, health, finished, after = asyncio.run(scenario())
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
    assert "API_MAX_CONCURRENT_REQUESTS" in refused.json()["detail"]
    assert health.status_code == 200, "/health is never refused for being busy"
    assert [r.status_code for r in finished] == [200, 200] and after.status_code == 200
    assert limited.active == 0


def test_the_app_is_wired_with_the_configured_limit():
    from app.main import app

    limits = [m for m in app.user_middleware if m.cls is ConcurrencyLimit]
    assert len(limits) == 1 and limits[0].kwargs["limit"] > 0


@pytest.mark.parametrize("path", ["/health", "/ready"])
def test_the_exempt_paths_are_the_probes(path):
    assert path in ConcurrencyLimit.EXEMPT
