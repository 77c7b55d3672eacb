"""What authentication costs one request, in-process: `app.auth.check` with a key, with a rate, and open.

End to end (`bench.run` vs `bench.run --no-auth`) the difference drowns in the noise of a shared
2-core machine; this measures the check itself, the same code the routes and the fast path call.

    .venv/bin/python -m bench.auth [--calls 20000]

Needs Redis (REDIS_URL) for the rate-limited case.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from app import auth
from app.keys import add_key
from config import Settings


async def _per_call_us(authorization: str | None, calls: int) -> float:
    for _ in range(200):  # warm: the first lease, the first stat of the keys file
        await auth.check(authorization, ["ingest"], ("127.0.0.1", 8000))
    started = time.process_time()
    for _ in range(calls):
        await auth.check(authorization, ["ingest"], ("127.0.0.1", 8000))
    return (time.process_time() - started) / calls * 1e6


def measure(calls: int) -> dict[str, float]:
    """CPU microseconds per check: open API, a key without a rate, a key with a (never reached) rate."""
    with tempfile.TemporaryDirectory() as workdir:
        keys = Path(workdir) / "api-keys.json"
        results = {}
        cases = [("open", None, None), ("key", 0, "ingest"), ("key with a rate", 10**9, "ingest")]
        for label, rate, scope in cases:
            if scope is None:
                settings = Settings(api_keys_file=Path(workdir) / "none.json", auth_by_proxy=False)
                header = None
            else:
                secret = add_key(keys, f"bench-{len(results)}", [scope], rate=rate)
                settings = Settings(api_keys_file=keys, auth_by_proxy=False)
                header = f"Bearer {secret}"
            authenticator = auth.Authenticator(settings)
            auth.get_authenticator = lambda: authenticator  # this process only
            results[label] = asyncio.run(_per_call_us(header, calls))
        return results


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(prog="python -m bench.auth", description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    args = parser.parse_args(argv)
    results = measure(args.calls)
    for label, micros in results.items():
        print(f"{label:>16}: {micros:6.1f} us CPU per request")
    return results


if __name__ == "__main__":
    main()
