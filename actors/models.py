"""Model training and prediction, on queues of their own (a long training never delays rows)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import dramatiq
from dramatiq.middleware import CurrentMessage
from dramatiq.middleware.time_limit import TimeLimitExceeded
from loguru import logger

from actors import PREDICTIONS_QUEUE, TRAINING_QUEUE, lifecycle, settings
from pipeline.model_store import ModelNotFound, ModelStore, TamperedArtifact, open_store
from pipeline.training import TrainingInputError


@lru_cache(maxsize=1)
def store() -> ModelStore:
    return open_store(settings.model_store_url, settings.model_store_s3_endpoint_url)


@dramatiq.actor(
    queue_name=TRAINING_QUEUE,
    time_limit=settings.train_time_limit_seconds * 1000,
    # Bad input fails at once, and so does a training over its time limit (it would be as long
    # again); other errors (the store) are retried.
    throws=(TrainingInputError, TimeLimitExceeded),
)
def train_model(model: str, dataset: str, target: str | None, params: dict[str, Any]) -> dict[str, Any]:
    """Fit, evaluate on a held-out split, store artifact and metrics under this message's id."""
    import time

    from pipeline import training  # scikit-learn only in the processes that train

    model_id = CurrentMessage.get_current_message().message_id
    lifecycle.report_progress({"step": "training"})
    artifact, metrics = training.train(model, dataset, target, params, settings.dataset_dir,
                                       limits=training.TrainingLimits.from_settings(settings))
    metrics |= {"model_id": model_id, "created_at": int(time.time() * 1000)}
    lifecycle.report_progress({"step": "storing"})
    uri = store().save(model_id, artifact, metrics | {"artifact_uri": store().uri(model_id)})
    logger.info("trained {} on {}: accuracy {}", model, dataset, metrics["accuracy"])
    return {"model_id": model_id, "artifact_uri": uri, "metrics": metrics}


@lru_cache(maxsize=8)
def _loaded(model_id: str) -> dict[str, Any]:
    """Artifacts are immutable (one per training message), so caching them per process is safe."""
    from pipeline import training

    return training.load_artifact(store().artifact(model_id))


@dramatiq.actor(queue_name=PREDICTIONS_QUEUE, throws=(TrainingInputError, TamperedArtifact))
def predict(model_id: str, inputs: list[dict[str, Any]]) -> dict[str, Any]:
    from pipeline import training

    try:
        loaded = _loaded(model_id)  # the store checks the id and the artifact's sha256 first
    except ModelNotFound:
        raise TrainingInputError(f"no model {model_id} in the model store") from None
    return {"model_id": model_id, **training.predict(loaded, inputs)}
