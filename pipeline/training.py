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
from pathlib import Path
from typing import Any

import joblib
import numpy as np

BUILT_IN_DATASETS = ("iris", "wine", "breast_cancer")
MODELS = ("logistic_regression", "random_forest")


class TrainingInputError(ValueError):
    """The request cannot succeed as asked: retrying it would not help.

    `field` names the part of the request at fault, for the API's 422.
    """

    def __init__(self, message: str, field: str = "body"):
        super().__init__(message)
        self.field = field


def _estimator(model: str, params: dict[str, Any]):
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
    return estimator.set_params(**params)


def check_training_request(model: str, dataset: str, params: dict[str, Any], dataset_dir: Path) -> None:
    """Raise TrainingInputError for what can be known wrong before training."""
    estimator = _estimator(model, params)
    validate = getattr(estimator, "_validate_params", None)  # scikit-learn's own check of values
    if validate is not None:
        try:
            validate()
        except (ValueError, TypeError) as error:
            raise TrainingInputError(str(error), "params") from None
    if dataset not in BUILT_IN_DATASETS:
        dataset_path(dataset, dataset_dir)


def dataset_path(dataset: str, dataset_dir: Path) -> Path:
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
    return path


def load_dataset(dataset: str, target: str | None, dataset_dir: Path) -> tuple[Any, Any, list[str], str]:
    """(features, labels, feature names, target name)."""
    if dataset in BUILT_IN_DATASETS:
        from sklearn import datasets

        frame = getattr(datasets, f"load_{dataset}")(as_frame=True).frame
        target = target or "target"
    else:
        import pandas as pd

        frame = pd.read_csv(dataset_path(dataset, dataset_dir))
    if not target or target not in frame.columns:
        columns = ", ".join(map(str, frame.columns))
        raise TrainingInputError(f"target column {target!r} not in the dataset; columns: {columns}", "target")
    features = [str(column) for column in frame.columns if column != target]
    return frame[features], frame[target], features, target


def train(
    model: str, dataset: str, target: str | None, params: dict[str, Any], dataset_dir: Path,
    test_size: float = 0.25, random_state: int = 0,
) -> tuple[bytes, dict[str, Any]]:
    """Fit on a stratified split, evaluate on the held-out part; (artifact bytes, metrics)."""
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.model_selection import train_test_split

    estimator = _estimator(model, params)
    x, y, features, target = load_dataset(dataset, target, dataset_dir)
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
