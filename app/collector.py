"""Python's cyclic garbage collector, set for a server whose requests make many short-lived objects.

Why: perf on the API under `bench.run` put ~14% of its CPU in the collector
(`gc_collect_main` and its traversals). Python starts a young collection
every 700 container objects allocated net of those freed; with 64 requests
in flight, each holding its models, scope, coroutines and futures, those
collections come every few requests, find the objects of the requests still
in flight alive, scan them and promote them, and the promotions bring on full
collections, which scan the ~94,000 objects that importing the app made
(FastAPI, pydantic, redis, pika). Measured: with a threshold of 10,000 the
collector falls to ~0.1% of the API's CPU (bench/RESULTS.md).

What it costs: garbage in reference cycles (an exception and its traceback,
say) waits for up to `young_threshold` allocations instead of 700 before it is
freed: a few requests' worth, bounded. The objects frozen at start-up are
never collected; they live as long as the process anyway.
"""

from __future__ import annotations

import gc


def tune_collector(young_threshold: int) -> None:
    """Freeze what start-up made out of the collector's scans and collect the young less often.

    Called once per process when it is ready to serve (the app's lifespan). 0 leaves Python's
    settings alone.
    """
    if not young_threshold:
        return
    gc.collect()  # what start-up left as garbage goes now, not into the frozen generation
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(young_threshold, middle, oldest)
