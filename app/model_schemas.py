"""Requests and answers of the model routes (POST /tasks/train, POST /tasks/predict, GET /models)."""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

from config import get_settings

_settings = get_settings()

FeatureValue = Union[StrictInt, StrictFloat, StrictStr, StrictBool, None]


class TrainRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"model": "logistic_regression", "dataset": "iris", "params": {"C": 0.5}},
                {"model": "random_forest", "dataset": "wine", "params": {"n_estimators": 50, "max_depth": 4}},
                {"model": "random_forest", "dataset": "churn.csv", "target": "churned", "params": {}},
            ]
        },
    )

    model: Literal["logistic_regression", "random_forest"]
    # A file name, never a control character (a NUL would reach the file system as an error).
    dataset: str = Field(
        min_length=1, max_length=255, pattern=r"^[A-Za-z0-9._/ -]+$",
        description="`iris`, `wine`, `breast_cancer` (built into scikit-learn), or a CSV file in DATASET_DIR "
        "(letters, digits, `. _ / -` and spaces).",
    )
    target: Optional[str] = Field(
        None, min_length=1, max_length=255, description="Label column; built-in datasets: `target` (default)."
    )
    params: dict[str, Any] = Field(
        default_factory=dict, max_length=50, description="Estimator parameters (scikit-learn's names)."
    )


class PredictRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "model_id": "iris-sample",  # installed by the model workers (pipeline/samples.py)
                    "inputs": [
                        {"sepal length (cm)": 5.1, "sepal width (cm)": 3.5,
                         "petal length (cm)": 1.4, "petal width (cm)": 0.2},
                    ],
                }
            ]
        },
    )

    model_id: str = Field(
        pattern=r"^[A-Za-z0-9-]{1,64}$",
        description="From the training's result or GET /models; a fresh stack has `iris-sample`.",
    )
    inputs: list[dict[str, FeatureValue]] = Field(
        min_length=1, max_length=_settings.max_predict_inputs,
        description="One object per row, with exactly the model's features (see GET /models).",
    )


class TaskSubmitted(BaseModel):
    message_id: str
    status: Literal["submitted"] = "submitted"
    status_url: str = Field(description="GET it for the state, progress and, once done, the result.")

    model_config = {
        "json_schema_extra": {
            "examples": [{"message_id": "2b0f6a4e-6c1e-4f0e-9d7e-5b1f3c2a9e10", "status": "submitted",
                          "status_url": "/tasks/2b0f6a4e-6c1e-4f0e-9d7e-5b1f3c2a9e10"}]
        }
    }


class StoredModel(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=())

    model_id: str
    model: str
    dataset: str
    target: str
    params: dict[str, Any]
    features: list[str]
    classes: list[Any]
    accuracy: float = Field(description="On the held-out split (25 %, stratified).")
    f1_macro: float
    train_rows: int
    test_rows: int
    created_at: int = Field(description="ms since the epoch.")
    artifact_uri: str


class ModelList(BaseModel):
    models: list[StoredModel]

    model_config = {
        "json_schema_extra": {
            "examples": [{"models": [{
                "model_id": "2b0f6a4e-6c1e-4f0e-9d7e-5b1f3c2a9e10", "model": "logistic_regression",
                "dataset": "iris", "target": "target", "params": {"C": 0.5},
                "features": ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"],
                "classes": [0, 1, 2], "accuracy": 0.973684, "f1_macro": 0.973323, "train_rows": 112,
                "test_rows": 38, "fit_seconds": 0.0081, "created_at": 1764094800123,
                "artifact_uri": "file:///srv/data/models/2b0f6a4e-6c1e-4f0e-9d7e-5b1f3c2a9e10/model.joblib",
            }]}]
        }
    }
