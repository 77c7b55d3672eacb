"""Model training and prediction with real workers: local store here, S3 (moto server) below."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.support.rabbit import queue_state
from tests.support.stack import Stack, free_port, isolated_stack
from tests.support.waiting import wait_for

IRIS_ROW = {"sepal length (cm)": 5.1, "sepal width (cm)": 3.5, "petal length (cm)": 1.4, "petal width (cm)": 0.2}


@contextmanager
def model_stack(workdir: Path, prefix: str, **settings: str) -> Iterator[Stack]:
    """API, main workers and the model worker group, on a vhost of their own."""
    with isolated_stack(workdir, prefix, processes=1, threads=4, **settings) as stack:
        stack.start()
        stack.start_model_workers()
        yield stack


@pytest.fixture(scope="module")
def ml_stack(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("models")
    (workdir / "datasets").mkdir()
    (workdir / "datasets" / "fruit.csv").write_text(
        "weight,colour,kind\n" + "".join(f"{100 + i},{i % 3},{'apple' if i % 2 else 'pear'}\n" for i in range(60))
    )
    with model_stack(workdir, "models") as stack:
        yield stack


def submit(stack, path: str, body: dict) -> str:
    response = stack.http.post(f"{path}", json=body, timeout=30)
    assert response.status_code == 202, response.text
    answer = response.json()
    assert answer["status_url"] == f"/tasks/{answer['message_id']}"
    return answer["message_id"]


def finished(stack, message_id: str, timeout: float = 90) -> dict:
    def done():
        body = stack.http.get(f"/tasks/{message_id}", timeout=10).json()
        return body.get("state") in ("succeeded", "failed", "dead-lettered") and body

    return wait_for(done, timeout=timeout, interval=0.2, what=f"task {message_id} to finish")


def refused(stack, path: str, body: dict) -> dict:
    response = stack.http.post(f"{path}", json=body, timeout=30)
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    return error


def test_training_stores_artifact_and_metrics_and_lists_the_model(ml_stack):
    message_id = submit(ml_stack, "/tasks/train", {"model": "logistic_regression", "dataset": "iris",
                                                    "params": {"C": 0.5}})
    status = finished(ml_stack, message_id)
    assert status["state"] == "succeeded", status
    result = status["result"]
    assert result["model_id"] == message_id
    metrics = result["metrics"]
    assert metrics["accuracy"] > 0.8 and metrics["test_rows"] == 38 and metrics["params"] == {"C": 0.5}
    artifact = Path(result["artifact_uri"].removeprefix("file://"))
    assert artifact.is_file() and artifact.parent.name == message_id
    listed = ml_stack.http.get("/models", timeout=10).json()["models"]
    assert message_id in {model["model_id"] for model in listed}


def test_concurrent_trainings_never_overwrite_each_other(ml_stack):
    requests = [
        {"model": "logistic_regression", "dataset": "wine", "params": {}},
        {"model": "random_forest", "dataset": "wine", "params": {"n_estimators": 15}},
        {"model": "random_forest", "dataset": "breast_cancer", "params": {"n_estimators": 10, "max_depth": 3}},
        {"model": "logistic_regression", "dataset": "breast_cancer", "params": {"C": 2.0}},
    ]
    ids = [submit(ml_stack, "/tasks/train", body) for body in requests]
    for message_id, body in zip(ids, requests):
        status = finished(ml_stack, message_id)
        assert status["state"] == "succeeded", status
        metrics = status["result"]["metrics"]
        assert (metrics["model"], metrics["dataset"], metrics["params"]) == (body["model"], body["dataset"], body["params"])
    stored = {model["model_id"]: model for model in ml_stack.http.get("/models", timeout=10).json()["models"]}
    for message_id, body in zip(ids, requests):
        assert (stored[message_id]["model"], stored[message_id]["dataset"]) == (body["model"], body["dataset"])


def test_prediction_returns_predictions_and_probabilities(ml_stack):
    model_id = submit(ml_stack, "/tasks/train", {"model": "random_forest", "dataset": "iris", "params": {}})
    assert finished(ml_stack, model_id)["state"] == "succeeded"
    for _ in range(2):  # the second one is served from the worker's cache of loaded artifacts
        message_id = submit(ml_stack, "/tasks/predict", {"model_id": model_id, "inputs": [IRIS_ROW, IRIS_ROW]})
        status = finished(ml_stack, message_id)
        assert status["state"] == "succeeded", status
        assert status["result"]["predictions"] == [0, 0]
        (first, _) = status["result"]["probabilities"]
        assert set(first) == {"0", "1", "2"} and abs(sum(first.values()) - 1) < 1e-6


def test_a_csv_dataset_in_dataset_dir_trains_and_a_wrong_target_fails_with_the_reason(ml_stack):
    good = submit(ml_stack, "/tasks/train", {"model": "random_forest", "dataset": "fruit.csv", "target": "kind",
                                             "params": {"n_estimators": 5}})
    status = finished(ml_stack, good)
    assert status["state"] == "succeeded", status
    assert status["result"]["metrics"]["features"] == ["weight", "colour"]
    assert status["result"]["metrics"]["classes"] == ["apple", "pear"]

    bad = submit(ml_stack, "/tasks/train", {"model": "random_forest", "dataset": "fruit.csv", "target": "taste"})
    status = finished(ml_stack, bad)
    assert status["state"] == "failed" and status["attempts"] == 1, "bad input is not retried"
    assert "target column 'taste' not in the dataset" in status["last_error"]
    letters = wait_for(lambda: (body := ml_stack.http.get("/dead-letters", params={"queue": "training"},
                                                  timeout=10).json())["count"] >= 1 and body,
                       timeout=30, what="the failed training among the dead letters")
    assert bad in {letter["message_id"] for letter in letters["messages"]}, "an operator can see and replay it"


def test_a_fresh_stack_has_the_samples_and_every_model_example_of_the_schema_succeeds(ml_stack):
    """What a user tries first: the examples in /docs, before they have a dataset or a model."""
    from app.main import app

    paths = app.openapi()["paths"]
    listed = {model["model_id"] for model in ml_stack.http.get("/models", timeout=10).json()["models"]}
    assert "iris-sample" in listed
    for path in ("/tasks/train", "/tasks/predict"):
        media = paths[path]["post"]["requestBody"]["content"]["application/json"]
        schema = app.openapi()["components"]["schemas"][media["schema"]["$ref"].rsplit("/", 1)[1]]
        for example in schema["examples"]:
            status = finished(ml_stack, submit(ml_stack, path, example))
            assert status["state"] == "succeeded", (path, example, status)


def test_bad_requests_are_refused_before_anything_is_enqueued(ml_stack):
    model_id = submit(ml_stack, "/tasks/train", {"model": "logistic_regression", "dataset": "iris"})
    assert finished(ml_stack, model_id)["state"] == "succeeded"
    queued_before = queue_state(ml_stack.rabbitmq_url, "training")[0], queue_state(ml_stack.rabbitmq_url, "predictions")[0]

    assert refused(ml_stack, "/tasks/train", {"model": "svm", "dataset": "iris"})["field"] == "model"
    error = refused(ml_stack, "/tasks/train", {"model": "random_forest", "dataset": "iris", "params": {"bogus": 1}})
    assert (error["field"], error["message"]) == ("params", "unknown parameters for random_forest: bogus")
    error = refused(ml_stack, "/tasks/train", {"model": "logistic_regression", "dataset": "iris", "params": {"C": -1}})
    assert error["field"] == "params" and "'C' parameter" in error["message"]
    assert refused(ml_stack, "/tasks/train", {"model": "random_forest", "dataset": "nope"})["field"] == "dataset"
    assert refused(ml_stack, "/tasks/train", {"model": "random_forest", "dataset": "../../etc/passwd.csv"})["field"] == "dataset"

    error = refused(ml_stack, "/tasks/predict", {"model_id": "no-such-model", "inputs": [IRIS_ROW]})
    assert error["field"] == "model_id"
    wrong = {**{k: v for k, v in IRIS_ROW.items() if k != "petal width (cm)"}, "colour": 1}
    error = refused(ml_stack, "/tasks/predict", {"model_id": model_id, "inputs": [IRIS_ROW, wrong]})
    assert error == {"field": "inputs.1", "message": "missing petal width (cm); unexpected colour",
                     "type": "invalid_inputs"}

    after = queue_state(ml_stack.rabbitmq_url, "training")[0], queue_state(ml_stack.rabbitmq_url, "predictions")[0]
    assert after == queued_before == (0, 0)


@pytest.fixture(scope="module")
def moto_s3(tmp_path_factory):
    """A local S3-compatible server (moto's server mode), on 127.0.0.1 only."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=open(log, "wb"), stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: httpx.get(f"{url}/moto-api/", timeout=2).status_code == 200, timeout=30,
                 what="moto's S3 server")
        yield url
    finally:
        server.terminate()
        server.wait(10)


def test_a_training_over_its_time_limit_fails_at_once_without_retries(tmp_path):
    with model_stack(tmp_path, "timelimit", train_time_limit_seconds="1") as stack:
        message_id = submit(stack, "/tasks/train", {"model": "random_forest", "dataset": "breast_cancer",
                                                    "params": {"n_estimators": 1000}})
        status = finished(stack, message_id, timeout=60)
        assert status["state"] == "failed" and status["attempts"] == 1, status
        assert "TimeLimitExceeded" in status["last_error"]
        assert message_id not in {model["model_id"] for model in stack.http.get("/models").json()["models"]}


def test_an_s3_model_store_holds_the_artifacts(tmp_path, moto_s3, monkeypatch):
    import boto3

    credentials = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    for name, value in credentials.items():
        monkeypatch.setenv(name, value)  # inherited by the stack's processes too
    s3 = boto3.client("s3", endpoint_url=moto_s3)
    s3.create_bucket(Bucket="models")
    with model_stack(tmp_path, "s3models", model_store_url="s3://models/team-a",
                     model_store_s3_endpoint_url=moto_s3) as stack:
        model_id = submit(stack, "/tasks/train", {"model": "logistic_regression", "dataset": "iris"})
        status = finished(stack, model_id)
        assert status["state"] == "succeeded", status
        assert status["result"]["artifact_uri"] == f"s3://models/team-a/{model_id}/model.joblib"
        keys = {item["Key"] for item in s3.list_objects_v2(Bucket="models")["Contents"]}
        # The sample model the model workers installed at start, then this one.
        assert keys == {f"team-a/{name}/{part}" for name in ("iris-sample", model_id)
                        for part in ("model.joblib", "metrics.json")}
        models = stack.http.get("/models", timeout=10).json()["models"]
        assert [m["model_id"] for m in models] == ["iris-sample", model_id]
        prediction = finished(stack, submit(stack, "/tasks/predict", {"model_id": model_id, "inputs": [IRIS_ROW]}))
        assert prediction["state"] == "succeeded" and prediction["result"]["predictions"] == [0]
