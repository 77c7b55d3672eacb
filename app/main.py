"""The app factory: wires routers, limits and error handlers."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

from fastapi import FastAPI
from loguru import logger
from starlette.middleware.trustedhost import TrustedHostMiddleware

from app.auth import get_authenticator, requires
from app.collector import tune_collector
from app.errors import HOST_REFUSED_RESPONSE, install_error_handlers
from app.json_route import OrjsonRoute
from app.fast_ingest import FastIngest
from app.limits import BodySizeLimit, ConcurrencyLimit, bulk_body_limits
from app.metrics import metrics_endpoint
from app.request_context import RequestContext
from app.routers import bulk
from app.routers import dead_letters, health, ingest, message_status, models, records, status, tasks
from config import Settings, get_settings
from logs import configure_logging


@asynccontextmanager
async def _connect_publisher(app: FastAPI):
    """Connect to RabbitMQ at start-up, so the first request need not, and /ready is honest; sample
    the console's history (app/history.py) while serving; set the garbage collector for serving
    (app/collector.py) once start-up has made what it keeps."""
    from actors import broker

    from app.routers.bulk import background_uploads
    from app.routers.status import get_history

    settings = get_settings()
    _warn_if_open(settings)
    broker.publish_on(asyncio.get_running_loop())  # requests publish on their own thread (actors/publisher_loops.py)
    if settings.history_sample_seconds:
        get_history().start()
    tune_collector(settings.api_gc_young_threshold)
    yield
    await background_uploads.stop()
    get_history().stop()
    await broker.publisher.aclose(timeout=settings.publish_timeout_seconds)


def _warn_if_open(settings: Settings) -> None:
    if settings.auth_by_proxy:
        logger.warning("AUTH_BY_PROXY: no API keys are checked; every request is trusted with every scope. "
                       "Only safe when your authenticating proxy is the sole way in")
    elif not get_authenticator().ring.enforcing:
        logger.warning("no API keys ({} does not exist): the API is open to anyone who reaches {}; "
                       "create a key with `python -m app.keys add NAME --scopes ...`",
                       settings.api_keys_file, settings.api_host)


def create_app(settings: Settings | None = None, *, fast_ingest: bool = True) -> FastAPI:
    """`fast_ingest=False` leaves POST /api wholly to FastAPI (the tests compare the two)."""
    settings = settings or get_settings()
    configure_logging(settings.log_level, settings.log_format)
    app = FastAPI(
        lifespan=_connect_publisher,
        title="Detections ingest",
        summary="POST detections; Dramatiq workers on RabbitMQ append one CSV row per pred, exactly once.",
        version="0.1.0",
        # operationId = the route function's name: readable in generated clients, and what links name.
        generate_unique_id_function=lambda route: route.name,
        responses=HOST_REFUSED_RESPONSE,  # a route's own 400 (a bad upload) is documented over it
        # Prometheus is the metrics path here; FastAPI's OpenTelemetry support is opt-in (OPENTELEMETRY).
        telemetry=None if settings.opentelemetry else {"tracing": False, "metrics": False, "logs": False},
    )
    if fast_ingest:
        # Innermost of ours: the body limit, and the request id, access log and metrics wrap it too.
        app.add_middleware(FastIngest, api=app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes, per_path=bulk_body_limits(settings))
    # Before anything is read: the number of requests in flight bounds the memory they hold.
    app.add_middleware(ConcurrencyLimit, limit=settings.api_max_concurrent_requests)
    # A page on another site cannot reach us through a DNS name it points at 127.0.0.1 (DNS rebinding).
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=settings.allowed_hosts.split())
    # Outermost: request id, access log and metrics, for 413s too.
    app.add_middleware(RequestContext, access_log=settings.access_log)
    install_error_handlers(app)
    app.include_router(ingest.router)
    app.include_router(bulk.router)
    app.include_router(tasks.router)
    app.include_router(models.router)
    app.include_router(message_status.router)
    app.include_router(records.router)
    app.include_router(dead_letters.router)
    app.include_router(health.router)
    app.include_router(status.router)
    # An API route (not a bare one), so request metrics label it by its template like the rest.
    app.router.add_api_route("/metrics", metrics_endpoint, include_in_schema=False,
                             dependencies=[requires("metrics")], route_class_override=OrjsonRoute)
    return app


app = create_app()
