"""The API's Prometheus metrics and its /metrics endpoint (prometheus_client).

With several uvicorn workers (API_WORKERS > 1) set PROMETHEUS_MULTIPROC_DIR
(entrypoint_api.sh does): each process writes its samples there and /metrics
sums them, whichever process answers the scrape.
"""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import multiprocess
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

HTTP_REQUESTS = Counter(
    "ingest_http_requests_total", "HTTP requests answered, by route template and status.", ["method", "route", "status"]
)
HTTP_DURATION = Histogram(
    "ingest_http_request_duration_seconds",
    "Time to answer an HTTP request, by route template.",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
PUBLISH_DURATION = Histogram(
    "ingest_publish_duration_seconds",
    "From handing a message to the publisher to RabbitMQ's confirm.",
    ["queue"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
)
PUBLISH_FAILURES = Counter(
    "ingest_publish_failures_total", "Publishes refused (answered 503), by reason.", ["queue", "reason"]
)


def observe_request(scope: Scope, status: int, seconds: float) -> None:
    """Count and time one answered request by its route template (never the raw path: bounded labels).

    Called by app.request_context.RequestContext, which already watches every
    request's start, status and end for the access log: one ASGI layer for both.
    """
    template = getattr(scope.get("route"), "path", None) or "unmatched"
    HTTP_REQUESTS.labels(scope["method"], template, str(status)).inc()
    HTTP_DURATION.labels(scope["method"], template).observe(seconds)


async def metrics_endpoint(request: Request) -> Response:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
