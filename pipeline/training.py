"""Train a scikit-learn classifier on a dataset, evaluate it, and predict with it.

Plain functions, so the actors stay thin and the tests can call them
directly. The checks a request can fail up front (unknown model, unknown
parameter, unknown dataset, missing or extra features) are separate
functions the API calls before anything is enqueued; the worker calls them
again, since a message may come from elsewhere.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np

BUILT_IN_DATASETS = ("iris", "wine", "breast_cancer")
MODELS = ("logistic_regression", "random_forest")


@dataclass(frozen=True)
class TrainingLimits:
    """What one training may cost (config.py's MAX_TRAIN_*, MAX_DATASET_*, TRAIN_N_JOBS).

    scikit-learn checks a parameter's type and range, not its cost: `n_estimators=10**9` is a valid
    forest, and `n_jobs=-1` takes every core of the worker's host. These bounds come from the
    operator's configuration; `n_jobs` is the worker's to set, not the request's.
    """

    max_estimators: int = 1000
    max_depth: int = 100
    max_iterations: int = 100_000
    max_rows: int = 1_000_000
    max_features: int = 1000
    max_bytes: int = 256 * 1024 * 1024
    n_jobs: int = 1

    @classmethod
    def from_settings(cls, settings: Any) -> "TrainingLimits":
        return cls(settings.max_train_estimators, settings.max_train_depth, settings.max_train_iterations,
                   settings.max_dataset_rows, settings.max_dataset_features, settings.max_dataset_bytes,
                   settings.train_n_jobs)

    def bounded_parameters(self) -> dict[str, tuple[int, str]]:
        return {"n_estimators": (self.max_estimators, "MAX_TRAIN_ESTIMATORS"),
                "max_depth": (self.max_depth, "MAX_TRAIN_DEPTH"),
                "max_iter": (self.max_iterations, "MAX_TRAIN_ITERATIONS")}


#: Parameters that are the worker's, never the request's.
WORKER_PARAMETERS = ("n_jobs",)


class TrainingInputError(ValueError):
    """The request cannot succeed as asked: retrying it would not help.

    `field` names the part of the request at fault, for the API's 422.
    """

    def __init__(self, message: str, field: str = "body"):
        super().__init__(message)
        self.field = field


def _estimator(model: str, params: dict[str, Any], limits: TrainingLimits):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    if model == "logistic_regression":
        estimator = LogisticRegression(max_iter=1000)
    elif model == "random_forest":
        estimator = RandomForestClassifier(random_state=0)
    else:
        raise TrainingInputError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}", "model")
    unknown = sorted(set(params) - set(estimator.get_params(deep=False)))
    if unknown:
        raise TrainingInputError(f"unknown parameters for {model}: {', '.join(unknown)}", "params")
    worker_owned = sorted(set(params) & set(WORKER_PARAMETERS))
    if worker_owned:
        raise TrainingInputError(f"{', '.join(worker_owned)} is set by the worker (TRAIN_N_JOBS), not by a request",
                                 "params")
    for name, (bound, setting) in limits.bounded_parameters().items():
        value = params.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > bound:
            raise TrainingInputError(f"{name} is {value}; the most allowed is {bound} ({setting})", "params")
    estimator.set_params(**params)
    if isinstance(estimator, RandomForestClassifier):  # (LogisticRegression's n_jobs has no effect)
        estimator.set_params(n_jobs=limits.n_jobs)
    return estimator


def check_training_request(model: str, dataset: str, params: dict[str, Any], dataset_dir: Path,
                           limits: TrainingLimits = TrainingLimits()) -> None:
    """Raise TrainingInputError for what can be known wrong before training."""
    estimator = _estimator(model, params, limits)
    validate = getattr(estimator, "_validate_params", None)  # scikit-learn's own check of values
    if validate is not None:
        try:
            validate()
        except (ValueError, TypeError) as error:
            raise TrainingInputError(str(error), "params") from None
    if dataset not in BUILT_IN_DATASETS:
        dataset_path(dataset, dataset_dir, limits)


def dataset_path(dataset: str, dataset_dir: Path, limits: TrainingLimits = TrainingLimits()) -> Path:
    """A CSV dataset, which must lie inside DATASET_DIR (no reading of arbitrary files)."""
    root = dataset_dir.resolve()
    path = (root / dataset).resolve()
    if root not in path.parents or path.suffix.lower() != ".csv":
        raise TrainingInputError(
            f"dataset {dataset!r} is neither built in ({', '.join(BUILT_IN_DATASETS)}) "
            f"nor a .csv file inside DATASET_DIR ({root})",
            "dataset",
        )
    if not path.is_file():
        raise TrainingInputError(f"dataset {dataset!r} not found in DATASET_DIR", "dataset")  # its path is the server's
    size = path.stat().st_size
    if size > limits.max_bytes:
        raise TrainingInputError(f"dataset {dataset!r} is {size} bytes; the most allowed is {limits.max_bytes} "
                                 "(MAX_DATASET_BYTES)", "dataset")
    return path


def load_dataset(dataset: str, target: str | None, dataset_dir: Path,
                 limits: TrainingLimits = TrainingLimits()) -> tuple[Any, Any, list[str], str]:
    """(features, labels, feature names, target name)."""
    if dataset in BUILT_IN_DATASETS:
        from sklearn import datasets

        frame = getattr(datasets, f"load_{dataset}")(as_frame=True).frame
        target = target or "target"
    else:
        import pandas as pd

        # One row past the bound is enough to know it is over; the rest is never read.
        frame = pd.read_csv(dataset_path(dataset, dataset_dir, limits), nrows=limits.max_rows + 1)
    if len(frame) > limits.max_rows:
        raise TrainingInputError(f"dataset {dataset!r} has more than {limits.max_rows} rows (MAX_DATASET_ROWS)",
                                 "dataset")
    if len(frame.columns) - 1 > limits.max_features:
        raise TrainingInputError(f"dataset {dataset!r} has {len(frame.columns) - 1} feature columns; the most "
                                 f"allowed is {limits.max_features} (MAX_DATASET_FEATURES)", "dataset")
    if not target or target not in frame.columns:
        columns = ", ".join(map(str, frame.columns))
        raise TrainingInputError(f"target column {target!r} not in the dataset; columns: {columns}", "target")
    features = [str(column) for column in frame.columns if column != target]
    return frame[features], frame[target], features, target


def train(
    model: str, dataset: str, target: str | None, params: dict[str, Any], dataset_dir: Path,
    test_size: float = 0.25, random_state: int = 0, limits: TrainingLimits = TrainingLimits(),
) -> tuple[bytes, dict[str, Any]]:
    """Fit on a stratified split, evaluate on the held-out part; (artifact bytes, metrics)."""
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.model_selection import train_test_split

    estimator = _estimator(model, params, limits)
    x, y, features, target = load_dataset(dataset, target, dataset_dir, limits)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_size, random_state=random_state, stratify=y
    )
    started = time.perf_counter()
    try:
        estimator.fit(x_train, y_train)
    except (ValueError, TypeError) as error:  # bad parameter values or data: retrying cannot help
        raise TrainingInputError(f"{model} could not be trained on {dataset}: {error}") from None
    fit_seconds = time.perf_counter() - started
    predicted = estimator.predict(x_test)
    classes = [_plain(label) for label in estimator.classes_]
    metrics = {
        "model": model,
        "dataset": dataset,
        "target": target,
        "params": params,
        "features": features,
        "classes": classes,
        "train_rows": len(x_train),
        "test_rows": len(x_test),
        "accuracy": round(float(accuracy_score(y_test, predicted)), 6),
        "f1_macro": round(float(f1_score(y_test, predicted, average="macro")), 6),
        "fit_seconds": round(fit_seconds, 4),
    }
    buffer = io.BytesIO()
    joblib.dump({"estimator": estimator, "features": features, "classes": classes}, buffer)
    return buffer.getvalue(), metrics


def check_inputs(features: list[str], inputs: list[dict[str, Any]]) -> None:
    """Every input must have exactly the model's features."""
    wanted = set(features)
    for index, row in enumerate(inputs):
        missing, extra = sorted(wanted - set(row)), sorted(set(row) - wanted)
        if missing or extra:
            parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
                [f"unexpected {', '.join(extra)}"] if extra else [])
            raise TrainingInputError("; ".join(parts), f"inputs.{index}")


def load_artifact(artifact: bytes) -> dict[str, Any]:
    return joblib.load(io.BytesIO(artifact))


def predict(loaded: dict[str, Any], inputs: list[dict[str, Any]]) -> dict[str, Any]:
    """Predictions, and class probabilities where the model has them."""
    import pandas as pd

    features = loaded["features"]
    check_inputs(features, inputs)
    frame = pd.DataFrame([[row[name] for name in features] for row in inputs], columns=features)
    estimator = loaded["estimator"]
    answer: dict[str, Any] = {"predictions": [_plain(label) for label in estimator.predict(frame)]}
    if hasattr(estimator, "predict_proba"):
        answer["probabilities"] = [
            {str(label): round(float(p), 6) for label, p in zip(loaded["classes"], row)}
            for row in estimator.predict_proba(frame)
        ]
    return answer


def _plain(value: Any) -> Any:
    """numpy scalars to JSON-able Python values."""
    return value.item() if isinstance(value, np.generic) else value
