"""POST /tasks/train, POST /tasks/predict, GET /models."""

from __future__ import annotations

from functools import lru_cache

from fastapi import APIRouter, Depends, HTTPException
from starlette.concurrency import run_in_threadpool

from actors.models import predict, train_model
from app.errors import JSON_BODY_RESPONSES, RETRY_AFTER_HEADER, UNAVAILABLE_RESPONSE, field_error, validation_response
from app.auth import Principal, requires
from app.json_route import OrjsonRoute
from app.limits import require_json
from app.links import PREDICT_WITH_LISTED, TASK_STATUS
from app.model_schemas import ModelList, PredictRequest, TaskSubmitted, TrainRequest
from app.publishing import publish
from config import get_settings
from app.schemas import ErrorResponse
from pipeline.model_store import ModelNotFound, ModelStore, StoreUnavailable, open_store

router = APIRouter(tags=["models"], route_class=OrjsonRoute)


@lru_cache(maxsize=1)
def get_store() -> ModelStore:
    settings = get_settings()
    return open_store(settings.model_store_url, settings.model_store_s3_endpoint_url)


STORE_UNAVAILABLE = {
    503: {
        "model": ErrorResponse,
        "description": "The model store (MODEL_STORE_URL) could not be read; retry after `Retry-After` seconds.",
        "headers": RETRY_AFTER_HEADER,
        "content": {"application/json": {"example": {
            "detail": "model store unavailable while reading the model list: EndpointConnectionError; retry later"}}},
    }
}


async def _from_store(function, *args):
    """A store call in the thread pool; a store that cannot be read is a 503, not a 500."""
    try:
        return await run_in_threadpool(function, *args)
    except StoreUnavailable as error:
        raise HTTPException(503, f"{error}; retry later", headers={"Retry-After": "1"}) from None


def _check_training(request: TrainRequest) -> None:
    from pipeline import training  # scikit-learn is imported on first use, not at API start

    settings = get_settings()
    training.check_training_request(request.model, request.dataset, request.params, settings.dataset_dir,
                                    training.TrainingLimits.from_settings(settings))


def _check_prediction(request: PredictRequest) -> None:
    from pipeline import training

    metrics = get_store().metrics(request.model_id)
    training.check_inputs(metrics["features"], request.inputs)


@router.post(
    "/tasks/train",
    status_code=202,
    response_model=TaskSubmitted,
    summary="Train a classifier in a model worker; the result (metrics, artifact URI) at status_url",
    description="Checked before it is enqueued: the model, each parameter's name and value, and the "
    "dataset. Trains on a stratified 75 % split, evaluates on the rest, stores `model.joblib` and "
    "`metrics.json` under the message id in MODEL_STORE_URL.",
    dependencies=[Depends(require_json)],
    responses={
        202: {"links": TASK_STATUS},
        **validation_response(
            "params", "The 'C' parameter of LogisticRegression must be a float in the range (0.0, inf]. "
            "Got -1 instead.", "invalid_training_request"),
        **JSON_BODY_RESPONSES,
        **UNAVAILABLE_RESPONSE,
    },
)
async def submit_training(request: TrainRequest, principal: Principal = requires("tasks")) -> TaskSubmitted:
    from pipeline.training import TrainingInputError

    try:
        await run_in_threadpool(_check_training, request)
    except TrainingInputError as error:
        raise field_error(error.field, str(error), "invalid_training_request") from None
    message_id = await publish(train_model, request.model, request.dataset, request.target, request.params,
                               sender=principal)
    return TaskSubmitted(message_id=message_id, status_url=f"/tasks/{message_id}")


@router.post(
    "/tasks/predict",
    status_code=202,
    response_model=TaskSubmitted,
    summary="Predict with a stored model in a model worker; predictions and probabilities at status_url",
    description="Checked before it is enqueued: the model exists, and every input has exactly its features.",
    dependencies=[Depends(require_json)],
    responses={
        **validation_response("inputs.0", "missing petal width (cm); unexpected colour", "invalid_inputs"),
        **JSON_BODY_RESPONSES,
        503: {**UNAVAILABLE_RESPONSE[503], "description": UNAVAILABLE_RESPONSE[503]["description"]
              + " Or: the model store could not be read."},
    },
)
async def submit_prediction(request: PredictRequest, principal: Principal = requires("tasks")) -> TaskSubmitted:
    from pipeline.training import TrainingInputError

    try:
        await _from_store(_check_prediction, request)
    except ModelNotFound:
        raise field_error("model_id", f"no model {request.model_id} in the model store (see GET /models)",
                      "unknown_model") from None
    except TrainingInputError as error:
        raise field_error(error.field, str(error), "invalid_inputs") from None
    message_id = await publish(predict, request.model_id, request.inputs, sender=principal)
    return TaskSubmitted(message_id=message_id, status_url=f"/tasks/{message_id}")


@router.get("/models", response_model=ModelList, summary="Stored models with their metrics, oldest first",
            dependencies=[requires("read")], responses={200: {"links": PREDICT_WITH_LISTED}, **STORE_UNAVAILABLE})
async def list_models() -> ModelList:
    return ModelList(models=await _from_store(get_store().list))
