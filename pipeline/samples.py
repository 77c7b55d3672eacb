"""The samples a fresh stack starts with: a CSV dataset and a trained model.

Every request example in the API's schema must work on a fresh stack (a user
tries them from /docs first, and a fuzzer replays them). Training examples
need a CSV in DATASET_DIR and prediction examples a model in the store, so the
model worker group installs both before it starts: `churn.csv` (shipped in
`pipeline/sample_data/`) and `iris-sample` (logistic regression on the iris
dataset scikit-learn ships). Each is written only when missing, so a user's
own file of that name is never replaced, and installing twice is harmless.
`INSTALL_SAMPLES=false` turns it off.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from pipeline.model_store import ModelNotFound, ModelStore

SAMPLE_DATASET = "churn.csv"
SAMPLE_MODEL_ID = "iris-sample"
_SHIPPED = Path(__file__).with_name("sample_data") / SAMPLE_DATASET


def install_dataset(dataset_dir: Path) -> bool:
    """Copy the sample CSV into DATASET_DIR unless a file of its name is there; whether it copied."""
    target = dataset_dir / SAMPLE_DATASET
    if target.exists():
        return False
    dataset_dir.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{SAMPLE_DATASET}.installing")
    shutil.copyfile(_SHIPPED, temporary)
    temporary.replace(target)  # whole or absent: the API may be reading the directory
    return True


def install_model(store: ModelStore, dataset_dir: Path) -> bool:
    """Train and store `iris-sample` unless the store has it; whether it trained."""
    from pipeline import training

    try:
        store.metrics(SAMPLE_MODEL_ID)
        return False
    except ModelNotFound:
        pass
    artifact, metrics = training.train("logistic_regression", "iris", None, {}, dataset_dir)
    metrics |= {"model_id": SAMPLE_MODEL_ID, "created_at": int(time.time() * 1000),
                "artifact_uri": store.uri(SAMPLE_MODEL_ID)}
    store.save(SAMPLE_MODEL_ID, artifact, metrics)
    return True


def main() -> None:
    from config import get_settings
    from pipeline.model_store import open_store

    settings = get_settings()
    if not settings.install_samples:
        return
    added = []
    if install_dataset(settings.dataset_dir):
        added.append(f"dataset {SAMPLE_DATASET}")
    if install_model(open_store(settings.model_store_url, settings.model_store_s3_endpoint_url), settings.dataset_dir):
        added.append(f"model {SAMPLE_MODEL_ID}")
    if added:
        print(f"samples: added {' and '.join(added)} (INSTALL_SAMPLES=false to skip)", flush=True)


if __name__ == "__main__":
    main()
