"""The samples a fresh stack starts with, so that every example in the schema works."""

from __future__ import annotations

from app.model_schemas import PredictRequest, TrainRequest
from pipeline import samples, training
from pipeline.model_store import LocalModelStore


def test_the_sample_dataset_is_copied_once_and_never_over_a_users_file(tmp_path):
    assert samples.install_dataset(tmp_path / "datasets")
    installed = (tmp_path / "datasets" / "churn.csv").read_bytes()
    assert installed.startswith(b"tenure_months,monthly_charges,support_calls,churned\n")

    (tmp_path / "datasets" / "churn.csv").write_text("mine\n")
    assert not samples.install_dataset(tmp_path / "datasets")
    assert (tmp_path / "datasets" / "churn.csv").read_text() == "mine\n"


def test_the_sample_model_is_trained_once_and_predicts_the_schemas_example(tmp_path):
    store = LocalModelStore(tmp_path / "models")
    assert samples.install_model(store, tmp_path)
    first = store.metrics("iris-sample")
    assert not samples.install_model(store, tmp_path)
    assert store.metrics("iris-sample") == first

    example = PredictRequest.model_json_schema()["examples"][0]
    assert example["model_id"] == samples.SAMPLE_MODEL_ID
    answer = training.predict(training.load_artifact(store.artifact("iris-sample")), example["inputs"])
    assert answer["predictions"] == [0]  # the example is a setosa


def test_every_training_example_passes_the_apis_checks_once_the_samples_are_in(tmp_path):
    samples.install_dataset(tmp_path)
    for example in TrainRequest.model_json_schema()["examples"]:
        training.check_training_request(example["model"], example["dataset"], example["params"], tmp_path)
        training.load_dataset(example["dataset"], example.get("target"), tmp_path)  # the target is a column


def test_install_samples_false_installs_nothing(tmp_path, monkeypatch):
    from config import get_settings

    monkeypatch.setenv("INSTALL_SAMPLES", "false")
    monkeypatch.setenv("DATASET_DIR", str(tmp_path / "datasets"))
    monkeypatch.setenv("MODEL_STORE_URL", str(tmp_path / "models"))
    get_settings.cache_clear()
    try:
        samples.main()
    finally:
        get_settings.cache_clear()
    assert not (tmp_path / "datasets").exists() and not (tmp_path / "models").exists()
