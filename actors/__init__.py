"""The message stage: the broker, its middleware and the queue names, in one place.

`dramatiq actors` imports this package; importing it sets the global broker
and registers every actor. The API imports it too, to `.send()`.
"""

from __future__ import annotations

import os
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from config import Settings, get_settings
from logs import configure_logging

settings = get_settings()
configure_logging(settings.log_level, settings.log_format)

# Dramatiq's Prometheus middleware reads these once, at import: set them first.
os.environ["dramatiq_prom_host"] = settings.prometheus_host
os.environ["dramatiq_prom_port"] = str(settings.prometheus_port)
os.environ["dramatiq_prom_db"] = str(settings.prometheus_db)

import dramatiq  # noqa: E402
from dramatiq.middleware import (  # noqa: E402
    AgeLimit,
    Callbacks,
    CurrentMessage,
    Pipelines,
    Retries,
    ShutdownNotifications,
    TimeLimit,
)
from dramatiq.middleware.prometheus import Prometheus  # noqa: E402
from dramatiq.results import Results  # noqa: E402

from actors.dead_letters import DeadLetterReasons  # noqa: E402
from actors.deliveries import DeliveryLimit  # noqa: E402
from actors.encoding import OrjsonEncoder  # noqa: E402
from actors.gathered_writes import gather_writes  # noqa: E402
from actors.log_context import LogContext  # noqa: E402
from actors.message_status import MessageLifecycle, StatusResultBackend, StatusWriter  # noqa: E402
from actors.cluster import node_urls, shuffled  # noqa: E402
from actors.stats import SharedStats, namespace_for  # noqa: E402
from actors.publisher import ConfirmedRabbitmqBroker  # noqa: E402

#: Detections get their own queue so long background tasks never delay rows.
INGEST_QUEUE = "ingest"
TASKS_QUEUE = "tasks"
#: Model training and prediction: consumed by their own worker group (entrypoint_dramatiq.sh ml).
TRAINING_QUEUE = "training"
PREDICTIONS_QUEUE = "predictions"


def url_with_timeouts(url: str, seconds: float) -> str:
    """Add pika timeouts to an AMQP URL, keeping any the operator set.

    Without them a publish to a broker that accepts TCP but never answers (or
    blocks publishers on a memory alarm) would hold an API thread forever.
    """
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    for name in ("socket_timeout", "stack_timeout", "blocked_connection_timeout"):
        query.setdefault(name, str(seconds))
    query.setdefault("connection_attempts", "1")
    return urlunsplit(parts._replace(query=urlencode(query)))


def build_broker(
    settings: Settings, lifecycle: MessageLifecycle, result_backend: StatusResultBackend
) -> ConfirmedRabbitmqBroker:
    """RabbitMQ broker with pipelined publisher confirms and our middleware.

    Dramatiq 2.x no longer adds Prometheus by default, and CurrentMessage
    (the actors need their message id) is opt-in: both are added here.
    """
    middleware = [
        Prometheus(),
        # First: a message that has killed its worker MAX_DELIVERIES times is failed before anything runs.
        DeliveryLimit(settings.redis_url, namespace_for(settings.rabbitmq_url), settings.max_deliveries),
        # Before Retries in this list, so its after-hooks run after Retries' (they run in reverse).
        SharedStats(settings.redis_url, namespace_for(settings.rabbitmq_url)),
        AgeLimit(),
        TimeLimit(),
        ShutdownNotifications(),
        Callbacks(),
        Pipelines(),
        # Before Retries too, for the same reason: it must see whether a failure will be retried.
        lifecycle,
        Retries(
            max_retries=settings.max_retries,
            min_backoff=settings.min_backoff_ms,
            max_backoff=settings.max_backoff_ms,
        ),
        CurrentMessage(),
        LogContext(),
        DeadLetterReasons(settings.redis_url),
        # What actors return (and final exceptions), for GET /api/{id} and /tasks/{id}.
        Results(backend=result_backend, store_results=True, result_ttl=settings.status_ttl_seconds * 1000),
    ]
    # send() returns only once RabbitMQ has confirmed the persistent message.
    # This process's order of the cluster's nodes (actors.cluster); pika tries them in turn.
    urls = [url_with_timeouts(url, settings.publish_timeout_seconds) for url in shuffled(node_urls(settings.rabbitmq_url))]
    return ConfirmedRabbitmqBroker(url=urls, middleware=middleware, publish_timeout=settings.publish_timeout_seconds,
                                   max_in_flight_bytes=settings.max_publish_in_flight_bytes,
                                   max_queue_messages=settings.max_queue_messages,
                                   queue_type=settings.rabbitmq_queue_type, max_deliveries=settings.max_deliveries)


dramatiq.set_encoder(OrjsonEncoder())
gather_writes()  # before any connection: every frame queued together leaves in one system call
status_writer = StatusWriter(settings.redis_url, namespace_for(settings.rabbitmq_url), settings.status_ttl_seconds)
result_backend = StatusResultBackend(status_writer, settings.redis_url)
#: Actors report progress through it (`lifecycle.report_progress`).
lifecycle = MessageLifecycle(status_writer, settings.max_retries)
broker = build_broker(settings, lifecycle, result_backend)
dramatiq.set_broker(broker)

from actors import ingest, models, tasks  # noqa: E402,F401  (registers the actors)
