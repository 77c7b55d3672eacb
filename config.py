"""Every knob of the service, read once from the environment or `.env`.

One `Settings` class is the only place that reads configuration; modules take
the values they need from `get_settings()`. Shell entrypoints read the same
values through `python -m config --shell`, so scripts never parse `.env`
themselves and cannot drift from the defaults here.
"""

from __future__ import annotations

import shlex
import sys
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    # Broker. A vhost in the URL is honoured (tests and benchmarks isolate themselves that way).
    # No credentials here: pika then offers RabbitMQ's `guest`, which RabbitMQ accepts from loopback
    # only. A deployment names its own user in the URL (compose: from .env).
    rabbitmq_url: str = Field(
        "amqp://127.0.0.1:5672/",
        description="AMQP URL of RabbitMQ, including the vhost and, beyond loopback, user and password; for a "
        "cluster, its hosts comma-separated (or whole URLs separated by ';').",
    )
    rabbitmq_queue_type: Literal["classic", "quorum"] = Field(
        "classic",
        description="The type the app declares its queues with: classic on one node, quorum (replicated, "
        "with a delivery limit) on a cluster. A queue's type is fixed when it is made.",
    )
    publish_timeout_seconds: float = Field(
        0.5,
        gt=0,
        description="Longest wait for RabbitMQ to confirm a publish (then 503); also the AMQP socket, "
        "handshake and blocked-connection timeout.",
    )
    max_queue_messages: int = Field(
        100_000, ge=0,
        description="Ready messages a queue may hold before publishes to it are answered 503 (the workers are "
        "behind; RabbitMQ's disk must not fill); 0: no bound.",
    )
    max_publish_in_flight_bytes: int = Field(
        64 * 1024 * 1024, ge=1024 * 1024,
        description="Bytes a process may have waiting for RabbitMQ's confirms; a publish past it is answered "
        "503 at once (RabbitMQ is slow, and the queue in front of it must not grow).",
    )

    # Idempotency-Key bookkeeping (Redis). Rows stay exactly-once without it; it lets a retry be
    # answered "duplicate" without publishing, and refuses a key reused for another body.
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis for Idempotency-Key records.")
    status_ttl_seconds: int = Field(
        24 * 3600, ge=60, description="How long a message's status and result stay readable (Redis)."
    )
    idempotency_ttl_seconds: int = Field(
        7 * 24 * 3600, ge=1, description="How long an Idempotency-Key is remembered."
    )

    # The console's charts (app/history.py): one sample of /status a period, in Redis.
    history_seconds: int = Field(900, ge=60, le=86400, description="How far back the console's charts go.")
    history_sample_seconds: float = Field(
        5.0, ge=0, le=300, description="Seconds between the samples behind the charts (at least 1); 0: no sampling.")

    @field_validator("history_sample_seconds")
    @classmethod
    def _a_period_or_none(cls, value: float) -> float:
        if 0 < value < 1:
            raise ValueError("HISTORY_SAMPLE_SECONDS must be 0 (no sampling) or at least 1")
        return value

    # Sink.
    csv_path: Path = Field(Path("data/data.csv"), description="CSV file the workers append rows to (the live file of this host's shard).")
    csv_rotate_bytes: int = Field(
        1024 * 1024 * 1024, ge=0,
        description="Seal the live CSV before a commit would take it past this size, and begin a new one; 0: never by size.",
    )
    csv_rotate_seconds: int = Field(
        86400, ge=0,
        description="Seal the live CSV at every multiple of this many seconds since the epoch (86400: at midnight UTC); 0: never by time.",
    )
    csv_host: str = Field(
        "", description="This host's name in sealed CSV files' names; empty: the machine's hostname.",
    )
    # GET /records: what one page may cost (it always returns one message at least).
    max_records_page_rows: int = Field(1000, ge=1, description="Largest `limit` GET /records accepts.")
    max_records_scan: int = Field(
        10_000, ge=1,
        description="Most ledger entries one page of GET /records examines; a filter that matches little "
        "gives shorter pages, each with a cursor to go on.",
    )
    max_records_page_bytes: int = Field(
        8 * 1024 * 1024, ge=64 * 1024, description="Most bytes of CSV one page of GET /records reads.",
    )
    sink_commit_linger_ms: float = Field(
        2.0, ge=0, le=100,
        description="How long a group commit smaller than the worker threads waits for more messages before "
        "its flush: at moderate rates each message would otherwise get a flush of its own. Adds up to this "
        "to ingest-to-row latency; 0: never wait.",
    )
    sink_retry_max_seconds: float = Field(
        5.0, gt=0, le=60,
        description="While the CSV cannot be written (disk full, I/O error, read-only, permissions), the "
        "workers hold their messages and retry the write, waiting at most this long between tries.",
    )

    # HTTP API.
    api_host: str = Field("127.0.0.1", description="Address uvicorn binds to (0.0.0.0 in containers).")
    api_port: int = Field(8000, ge=1, le=65535)
    api_workers: int = Field(1, ge=1, description="uvicorn worker processes.")
    api_max_concurrent_requests: int = Field(
        256, ge=1, description="Requests in flight per API process; the next one is answered 503 with Retry-After "
        "(each may hold up to its body limit in memory)."
    )
    api_keepalive_seconds: int = Field(
        5, ge=1, le=300, description="An idle keep-alive connection is closed after this long."
    )
    api_gc_young_threshold: int = Field(
        10_000, ge=0,
        description="Container objects an API process may add before Python's cyclic garbage collector runs "
        "(Python's default is 700), and the objects of start-up are frozen out of its scans (app/collector.py). "
        "At the default the collector took ~14% of the API's CPU under load (bench/RESULTS.md); 0 leaves "
        "Python's settings alone.",
    )

    # Access control (app/auth.py, app/keys.py). Without a keys file the API is open, and then it
    # serves on loopback only; `python -m app.keys add` creates the file and its first key.
    api_keys_file: Path = Field(
        Path("data/api-keys.json"), description="Hashed API keys (`python -m app.keys`); re-read when it changes."
    )
    default_rate_per_key: int = Field(
        0, ge=0, description="Requests per second a key without its own --rate may make; 0: unlimited."
    )
    auth_by_proxy: bool = Field(
        False,
        description="Serve without API keys on any address: ONLY when an authenticating proxy of your own is the "
        "sole way in. Every request is then trusted with every scope.",
    )
    allowed_hosts: str = Field(
        "127.0.0.1 localhost ::1",
        description="Host headers the API answers (space-separated; `*` for any): refuses DNS rebinding.",
    )

    # Every service process (entrypoint_api.sh, entrypoint_dramatiq.sh).
    malloc_trim_threshold_bytes: int = Field(
        2 * 1024 * 1024, ge=0,
        description="Free memory at the top of each heap glibc keeps for the next allocation instead of giving "
        "it back (exported as MALLOC_TRIM_THRESHOLD_, and half of it as MALLOC_MMAP_THRESHOLD_); 0: the "
        "entrypoints leave both alone. At glibc's default every ~40 KB message page-faulted its buffers in "
        "again (bench/RESULTS.md).",
    )

    # Workers.
    # One process of many threads: every message of the host then goes to one committer, whose group
    # commits take 7-9 messages instead of 3-4 under bench.run's load, 13 draining a full queue (a
    # second process also takes turns at the shard's lock and makes this one's ledger cache stale). Measured against 2 x 8: workers -20% CPU a message
    # end to end, and more messages a second (bench/RESULTS.md). Python runs on one core in one
    # process: on a machine with cores to spare for the workers, add processes.
    worker_processes: int = Field(1, ge=1, description="Processes of the dramatiq CLI.")
    worker_threads: int = Field(32, ge=1, description="Worker threads per process.")
    worker_extra_modules: str = Field(
        "", description="Extra modules the workers import (space-separated), e.g. your own middleware."
    )
    worker_queues: str = Field(
        "ingest", description="Queues the main worker group consumes (space-separated): detections only, so "
        "no background task ever holds a thread a detection needs."
    )
    # The task worker group: the `tasks` queue (countdowns and any task of yours), its own threads.
    task_worker_processes: int = Field(1, ge=1, description="Processes of the task worker group.")
    task_worker_threads: int = Field(8, ge=1, description="Threads per process of the task worker group.")
    task_prometheus_port: int = Field(9193, ge=1, le=65535, description="Metrics port of the task worker group.")
    ml_worker_processes: int = Field(1, ge=1, description="Processes of the model worker group.")
    ml_worker_threads: int = Field(2, ge=1, description="Threads per process of the model worker group.")
    ml_prometheus_port: int = Field(9192, ge=1, le=65535, description="Metrics port of the model worker group.")
    prometheus_host: str = Field("127.0.0.1", description="Address of the workers' metrics server.")
    prometheus_port: int = Field(9191, ge=1, le=65535, description="Port of the workers' metrics server.")
    prometheus_db: Path = Field(
        Path("/tmp/dramatiq-prometheus"),
        description="Multiprocess directory for worker metrics; cleared at worker start.",
    )

    # Retries (Dramatiq's Retries middleware). The backoff stays far below RabbitMQ's
    # 30-minute consumer_timeout, which would close a channel holding a delayed message longer.
    max_retries: int = Field(5, ge=0, description="Retries before a failing message is dead-lettered.")
    max_dead_letter_page_bytes: int = Field(
        8 * 1024 * 1024, ge=64 * 1024,
        description="Most bytes of payloads one page of GET /dead-letters holds (always one message at least).",
    )
    max_deliveries: int = Field(
        5, ge=0,
        description="Deliveries of a message whose worker died while running it (an OOM kill, a segfault) "
        "before it is dead-lettered as 'worker died N times'; 0: no limit.",
    )
    min_backoff_ms: int = Field(1_000, ge=0)
    max_backoff_ms: int = Field(60_000, ge=0)

    # Request limits.
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="Largest accepted request body.")
    max_preds: int = Field(100, ge=1, description="Most items in data.preds per request.")
    max_id_length: int = Field(256, ge=1, description="Longest device_id, client_id or license_id.")
    max_frame_length: int = Field(1024 * 1024, ge=4, description="Longest base64 image_frame.")
    max_tags: int = Field(64, ge=0, description="Most tags per pred.")
    max_tag_length: int = Field(256, ge=1, description="Longest tag.")
    max_countdown_seconds: int = Field(3600, ge=1, description="Longest countdown POST /tasks accepts.")

    # Bulk ingest (POST /api/batch, POST /file/upload). Their bodies have limits of their own;
    # every other route keeps MAX_BODY_BYTES.
    max_batch_items: int = Field(1000, ge=1, description="Most payloads in one POST /api/batch.")
    # A batch is validated whole, in memory (peak ~5x its size); bigger volumes belong in an upload,
    # which streams.
    max_batch_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="Largest POST /api/batch body.")
    max_upload_bytes: int = Field(1024 * 1024 * 1024, ge=1024, description="Largest POST /file/upload body.")
    max_upload_jobs: int = Field(
        4, ge=1, le=1000,
        description="Uploads one API process reads in the background at once (Prefer: respond-async); each "
        "holds a copy of its file on disk.")
    batch_confirm_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="Longest wait for RabbitMQ to confirm one chunk (up to 1,000 messages) of a batch or an "
        "upload; items not confirmed by then are answered `unavailable`.",
    )
    max_xlsx_unpacked_bytes: int = Field(
        1024 * 1024 * 1024, ge=1024, description="Largest uncompressed size of an uploaded workbook (zip bombs)."
    )
    max_xlsx_entries: int = Field(
        1000, ge=10, description="Most files inside an uploaded workbook (a zip); checked before its directory is read."
    )
    max_xlsx_strings_bytes: int = Field(
        128 * 1024 * 1024,
        ge=1024,
        description="Largest shared-strings part of an uploaded workbook; openpyxl holds it in memory whole.",
    )

    # Models (POST /tasks/train, /tasks/predict). Own queues and worker group: a long training
    # never holds a thread the detections need.
    model_store_url: str = Field(
        "data/models", description="Directory, file:///dir, or s3://bucket/prefix for trained models."
    )
    model_store_s3_endpoint_url: str = Field(
        "", description="S3 endpoint for S3-compatible stores (MinIO, moto); empty for AWS."
    )
    dataset_dir: Path = Field(Path("data/datasets"), description="CSV datasets training may read.")
    install_samples: bool = Field(
        True,
        description="The model workers add the sample dataset `churn.csv` and model `iris-sample` when they "
        "are missing, so every example in /docs works on a fresh stack.",
    )
    train_time_limit_seconds: int = Field(
        900, ge=1, description="Longest a training may run; one that takes longer ends `failed`, without retries."
    )
    max_train_estimators: int = Field(1000, ge=1, description="Largest `n_estimators` a training may ask for.")
    max_train_depth: int = Field(100, ge=1, description="Largest `max_depth` a training may ask for.")
    max_train_iterations: int = Field(100_000, ge=1, description="Largest `max_iter` a training may ask for.")
    max_dataset_rows: int = Field(1_000_000, ge=10, description="Most rows of a dataset a training reads.")
    max_dataset_features: int = Field(1000, ge=1, description="Most feature columns of a dataset.")
    max_dataset_bytes: int = Field(
        256 * 1024 * 1024, ge=1024, description="Largest CSV file in DATASET_DIR a training reads."
    )
    train_n_jobs: int = Field(
        1, ge=1, description="Processes one training or prediction may use (scikit-learn's n_jobs): set by the "
        "worker, never by the request."
    )
    max_predict_inputs: int = Field(1000, ge=1, description="Most inputs per POST /tasks/predict.")

    log_level: str = Field("INFO", description="loguru level: DEBUG, INFO, WARNING, ...")
    log_format: Literal["text", "json"] = Field(
        "text", description="`json`: one JSON object per line (for log shippers); `text`: for people."
    )
    access_log: bool = Field(True, description="The API logs one line per request, with its X-Request-ID.")
    opentelemetry: bool = Field(
        False,
        description="FastAPI's native OpenTelemetry (traces, metrics, logs) when a provider is configured; "
        "off by default, since it checks for providers on every request (~3% of the API's CPU).",
    )


@lru_cache
def get_settings() -> Settings:
    return Settings()


def malloc_environment(settings: Settings) -> dict[str, str]:
    """glibc's malloc variables from MALLOC_TRIM_THRESHOLD_BYTES, which glibc reads once, when the
    service's process starts. Setting the trim threshold stops glibc adapting its mmap threshold,
    so that is set too, at half, the ratio glibc's own adapting keeps: a frame up to 1 MiB still
    comes from the heap rather than a fresh mapping per message."""
    threshold = settings.malloc_trim_threshold_bytes
    if not threshold:
        return {}
    return {"MALLOC_TRIM_THRESHOLD_": str(threshold), "MALLOC_MMAP_THRESHOLD_": str(threshold // 2)}


def shell_exports(settings: Settings) -> str:
    """Render settings as `export NAME=value` lines for the entrypoint scripts, and glibc's malloc
    variables (`malloc_environment`)."""
    lines = []
    for name in Settings.model_fields:
        value = getattr(settings, name)
        lines.append(f"export {name.upper()}={shlex.quote(str(value))}")
    malloc = malloc_environment(settings)
    if malloc:
        lines.append("export " + " ".join(f"{name}={value}" for name, value in malloc.items()))
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:] != ["--shell"]:
        sys.exit("usage: python -m config --shell")
    print(shell_exports(get_settings()))
