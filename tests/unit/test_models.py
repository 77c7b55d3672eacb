"""pipeline/training.py and pipeline/model_store.py, without the broker."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from pipeline import training
from pipeline.model_store import (
    LocalModelStore, ModelNotFound, S3ModelStore, StoreUnavailable, TamperedArtifact, open_store,
)

FEATURES = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]


@pytest.fixture(scope="module")
def iris_model():
    return training.train("logistic_regression", "iris", None, {"C": 1.0}, Path("/nonexistent"))


def test_training_evaluates_on_a_held_out_split(iris_model):
    artifact, metrics = iris_model
    assert metrics["features"] == FEATURES and metrics["classes"] == [0, 1, 2]
    assert (metrics["train_rows"], metrics["test_rows"]) == (112, 38)
    assert metrics["accuracy"] > 0.9 and 0 < metrics["f1_macro"] <= 1
    predicted = training.predict(training.load_artifact(artifact), [dict(zip(FEATURES, [6.7, 3.0, 5.2, 2.3]))])
    assert predicted["predictions"] == [2] and max(predicted["probabilities"][0], key=predicted["probabilities"][0].get) == "2"


@pytest.mark.parametrize(
    ("model", "dataset", "params", "field"),
    [
        ("svm", "iris", {}, "model"),
        ("random_forest", "iris", {"n_trees": 3}, "params"),
        ("random_forest", "iris", {"n_estimators": 0}, "params"),
        ("logistic_regression", "mnist", {}, "dataset"),
        ("logistic_regression", "../outside.csv", {}, "dataset"),
    ],
)
def test_what_can_be_known_wrong_is_refused_up_front_naming_the_field(tmp_path, model, dataset, params, field):
    with pytest.raises(training.TrainingInputError) as refused:
        training.check_training_request(model, dataset, params, tmp_path)
    assert refused.value.field == field


def test_a_csv_dataset_must_be_inside_the_dataset_dir(tmp_path):
    (tmp_path / "ok.csv").write_text("a,b,y\n1,2,x\n")
    assert training.dataset_path("ok.csv", tmp_path) == (tmp_path / "ok.csv").resolve()
    with pytest.raises(training.TrainingInputError):
        training.dataset_path(str(tmp_path / ".." / "ok.csv"), tmp_path)


def test_inputs_need_exactly_the_features():
    training.check_inputs(["a", "b"], [{"a": 1, "b": 2}])
    with pytest.raises(training.TrainingInputError) as refused:
        training.check_inputs(["a", "b"], [{"a": 1, "b": 2}, {"a": 1, "c": 3}])
    assert (refused.value.field, str(refused.value)) == ("inputs.1", "missing b; unexpected c")


def exercise(store, artifact: bytes) -> None:
    with pytest.raises(ModelNotFound):
        store.metrics("m-1")
    assert store.list() == []
    uri = store.save("m-1", artifact, {"model_id": "m-1", "created_at": 2})
    store.save("m-2", b"other", {"model_id": "m-2", "created_at": 1})
    assert uri == store.uri("m-1")
    assert store.artifact("m-1") == artifact and store.metrics("m-1")["model_id"] == "m-1"
    assert [model["model_id"] for model in store.list()] == ["m-2", "m-1"]


def test_local_store(tmp_path, iris_model):
    store = open_store(str(tmp_path / "models"))
    assert isinstance(store, LocalModelStore)
    exercise(store, iris_model[0])
    assert not list((tmp_path / "models").rglob(".*")), "no temporary files left behind"


def test_a_half_written_model_is_not_listed_or_loaded(tmp_path):
    store = LocalModelStore(tmp_path)
    (tmp_path / "m-9").mkdir()
    (tmp_path / "m-9" / "model.joblib").write_bytes(b"partial")  # metrics.json never written
    assert store.list() == []
    with pytest.raises(ModelNotFound):
        store.artifact("m-9")


def test_s3_store(monkeypatch, iris_model):
    from moto import mock_aws

    for name, value in {"AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        import boto3

        boto3.client("s3").create_bucket(Bucket="bucket")
        store = open_store("s3://bucket/some/prefix")
        assert isinstance(store, S3ModelStore)
        exercise(store, iris_model[0])
        assert store.uri("m-1") == "s3://bucket/some/prefix/m-1/model.joblib"


@pytest.mark.parametrize("url", ["s3://", "ftp://host/x"])
def test_bad_store_urls_say_what_to_use(url):
    with pytest.raises(ValueError, match="s3://bucket/prefix"):
        open_store(url)


def test_a_worker_loads_each_artifact_from_the_store_once(monkeypatch, iris_model, tmp_path):
    """Predictions reuse the loaded model: artifacts never change (one per training message)."""
    import actors.models

    store = LocalModelStore(tmp_path)
    store.save("m-cached", iris_model[0], {"model_id": "m-cached", "features": FEATURES})
    reads = []
    original = store.artifact
    monkeypatch.setattr(store, "artifact", lambda model_id: reads.append(model_id) or original(model_id))
    monkeypatch.setattr(actors.models, "store", lambda: store)
    actors.models._loaded.cache_clear()
    row = dict(zip(FEATURES, [5.1, 3.5, 1.4, 0.2]))
    first = actors.models.predict.fn("m-cached", [row])
    second = actors.models.predict.fn("m-cached", [row, row])
    assert first["predictions"] == [0] and second["predictions"] == [0, 0]
    assert reads == ["m-cached"], "loaded once, then served from the worker's cache"
    actors.models._loaded.cache_clear()


@pytest.mark.parametrize("dataset", ["\x00.csv", "a\U0001f600.csv", "line\nbreak.csv"], ids=["NUL", "emoji", "newline"])
def test_a_dataset_name_with_a_control_character_is_a_422_naming_the_field_not_a_server_error(dataset):
    from fastapi.testclient import TestClient

    from app.main import create_app

    response = TestClient(create_app()).post("/tasks/train", json={"model": "logistic_regression", "dataset": dataset})
    assert response.status_code == 422
    assert response.json()["detail"][0]["field"] == "dataset"


def test_an_unknown_dataset_is_refused_without_naming_the_servers_path(tmp_path):
    with pytest.raises(training.TrainingInputError) as refused:
        training.check_training_request("logistic_regression", "missing.csv", {}, tmp_path)
    assert str(tmp_path) not in str(refused.value)


def test_a_store_that_cannot_be_read_is_unavailable_not_unknown(tmp_path, monkeypatch):
    from botocore.exceptions import EndpointConnectionError

    unreadable = LocalModelStore(tmp_path / "models")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "m-1").mkdir()
    (tmp_path / "models" / "m-1" / "metrics.json").mkdir()  # reading it is an OSError, not a missing file
    with pytest.raises(StoreUnavailable):
        unreadable.metrics("m-1")
    with pytest.raises(ModelNotFound):
        unreadable.metrics("m-2")

    for name, value in {"AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    s3 = S3ModelStore("bucket", "prefix", "http://127.0.0.1:9")
    monkeypatch.setattr(s3.client, "get_object", lambda **_: (_ for _ in ()).throw(
        EndpointConnectionError(endpoint_url="http://127.0.0.1:9")))
    with pytest.raises(StoreUnavailable, match="EndpointConnectionError"):
        s3.metrics("m-1")


@pytest.mark.parametrize(("method", "path", "body"), [
    ("GET", "/models", None),
    ("POST", "/tasks/predict", {"model_id": "iris-sample", "inputs": [dict(zip(FEATURES, [5.1, 3.5, 1.4, 0.2]))]}),
])
def test_the_api_answers_503_with_retry_after_while_the_store_cannot_be_read(monkeypatch, method, path, body):
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.routers import models

    class Down:
        def list(self):
            raise StoreUnavailable("model store unavailable while reading the model list: OSError")

        metrics = lambda self, model_id: self.list()  # noqa: E731

    monkeypatch.setattr(models, "get_store", lambda: Down())
    response = TestClient(create_app()).request(method, path, json=body)
    assert response.status_code == 503 and response.headers["Retry-After"] == "1"
    assert "model store unavailable" in response.json()["detail"]


# -- bounds, ids and integrity ------------------------------------------------------------------


@pytest.mark.parametrize(("params", "words"), [
    ({"n_estimators": 1_000_000_000}, "MAX_TRAIN_ESTIMATORS"),
    ({"max_depth": 10_000}, "MAX_TRAIN_DEPTH"),
    ({"n_jobs": -1}, "set by the worker"),
])
def test_a_training_cannot_ask_for_more_than_the_operator_allows(tmp_path, params, words):
    with pytest.raises(training.TrainingInputError, match=words) as refused:
        training.check_training_request("random_forest", "iris", params, tmp_path)
    assert refused.value.field == "params"
    with pytest.raises(training.TrainingInputError, match="MAX_TRAIN_ITERATIONS"):
        training.check_training_request("logistic_regression", "iris", {"max_iter": 10**12}, tmp_path)


def test_the_worker_sets_n_jobs(iris_model):
    limits = training.TrainingLimits(n_jobs=2)
    artifact, _ = training.train("random_forest", "iris", None, {"n_estimators": 3}, Path("/nonexistent"),
                                 limits=limits)
    assert training.load_artifact(artifact)["estimator"].n_jobs == 2


def test_a_dataset_over_its_bounds_is_refused_naming_the_setting(tmp_path):
    (tmp_path / "wide.csv").write_text(",".join(f"f{i}" for i in range(6)) + ",y\n" + "1," * 6 + "a\n")
    (tmp_path / "long.csv").write_text("a,y\n" + "1,x\n" * 30)
    small = training.TrainingLimits(max_rows=20, max_features=5, max_bytes=10_000)
    with pytest.raises(training.TrainingInputError, match="MAX_DATASET_FEATURES"):
        training.load_dataset("wide.csv", "y", tmp_path, small)
    with pytest.raises(training.TrainingInputError, match="MAX_DATASET_ROWS"):
        training.load_dataset("long.csv", "y", tmp_path, small)
    with pytest.raises(training.TrainingInputError, match="MAX_DATASET_BYTES"):
        training.check_training_request("logistic_regression", "long.csv", {}, tmp_path,
                                        training.TrainingLimits(max_bytes=100))


@pytest.mark.parametrize("model_id", ["/some/dir", "../outside", "a/b", "", "x" * 65])
def test_a_model_id_that_is_not_one_names_no_model_even_from_the_queue(tmp_path, model_id):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "metrics.json").write_text("{}")
    store = LocalModelStore(tmp_path / "models")
    with pytest.raises(ModelNotFound):
        store.artifact(model_id)


def test_an_artifact_that_is_not_the_one_stored_is_refused_and_never_unpickled(tmp_path, iris_model, monkeypatch):
    import io

    import joblib

    import actors.models

    canary = tmp_path / "unpickled"

    class Trap:
        def __reduce__(self):
            return (Path.touch, (canary,))

    store = LocalModelStore(tmp_path / "models")
    store.save("m-1", iris_model[0], {"model_id": "m-1", "features": FEATURES})
    assert store.metrics("m-1")["artifact_sha256"]
    buffer = io.BytesIO()
    joblib.dump(Trap(), buffer)
    (tmp_path / "models" / "m-1" / "model.joblib").write_bytes(buffer.getvalue())
    monkeypatch.setattr(actors.models, "store", lambda: store)
    actors.models._loaded.cache_clear()
    with pytest.raises(TamperedArtifact):
        actors.models.predict.fn("m-1", [dict(zip(FEATURES, [5.1, 3.5, 1.4, 0.2]))])
    assert not canary.exists(), "the tampered artifact was never unpickled"
    assert TamperedArtifact in actors.models.predict.options["throws"], "refused for good, not retried"

    # A model stored without a sha256 (by an older version) is refused too.
    metrics = store.metrics("m-1")
    del metrics["artifact_sha256"]
    (tmp_path / "models" / "m-1" / "metrics.json").write_bytes(orjson.dumps(metrics))
    with pytest.raises(TamperedArtifact, match="no recorded sha256"):
        store.artifact("m-1")
    actors.models._loaded.cache_clear()
