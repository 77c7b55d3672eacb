"""Where trained models live: a local directory, or any S3-compatible bucket.

A model is two objects under its id: `model.joblib` (the artifact) and
`metrics.json` (what training measured, and what prediction needs to check
its inputs). `metrics.json` is written last, so a model is listed only once
it is whole; a training that died half-way leaves nothing listable. The id is
the training message's id: a redelivered training rewrites the same model,
two different trainings can never write over each other.

Loading an artifact unpickles it, which runs whatever it holds, so nothing is
loaded that the store did not write: an id must match MODEL_ID_PATTERN (no
path can escape the store's root, whoever published the message), and
`metrics.json` records the artifact's sha256, which is checked before the
bytes reach joblib. An artifact that differs, or has no recorded sha256, is
refused (TamperedArtifact).
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import orjson

ARTIFACT = "model.joblib"
METRICS = "metrics.json"


MODEL_ID_PATTERN = re.compile(r"[A-Za-z0-9-]{1,64}")


class ModelNotFound(LookupError):
    pass


class TamperedArtifact(ValueError):
    """The artifact is not what the store wrote (its sha256 differs or was never recorded)."""


def checked_id(model_id: str) -> str:
    """A model id as the API accepts it; anything else (a path, `..`) names no model."""
    if not isinstance(model_id, str) or not MODEL_ID_PATTERN.fullmatch(model_id):
        raise ModelNotFound(f"{model_id!r} is not a model id")
    return model_id


def sealed(artifact: bytes, metrics: dict[str, Any]) -> dict[str, Any]:
    """The metrics to store beside an artifact: with its sha256."""
    return {**metrics, "artifact_sha256": hashlib.sha256(artifact).hexdigest()}


def verified(model_id: str, artifact: bytes, metrics: dict[str, Any]) -> bytes:
    """The artifact, if it is the one its metrics describe; else TamperedArtifact."""
    expected = metrics.get("artifact_sha256")
    if not expected:
        raise TamperedArtifact(f"model {model_id} has no recorded sha256 (stored by an older version?); train it again")
    if hashlib.sha256(artifact).hexdigest() != expected:
        raise TamperedArtifact(f"model {model_id}: the artifact's sha256 is not the one recorded when it was stored")
    return artifact


class StoreUnavailable(RuntimeError):
    """The store could not be read (a disk error, S3 unreachable or refusing): worth retrying, unlike
    ModelNotFound. The API answers it with 503, the prediction worker retries the message."""


@contextmanager
def _reading(what: str, *errors: type[BaseException]):
    try:
        yield
    except ModelNotFound:
        raise
    except errors as error:
        raise StoreUnavailable(f"model store unavailable while reading {what}: {type(error).__name__}") from error


class ModelStore(Protocol):
    def save(self, model_id: str, artifact: bytes, metrics: dict[str, Any]) -> str: ...
    def artifact(self, model_id: str) -> bytes: ...
    def metrics(self, model_id: str) -> dict[str, Any]: ...
    def list(self) -> list[dict[str, Any]]: ...
    def uri(self, model_id: str) -> str: ...


class LocalModelStore:
    def __init__(self, root: Path):
        self.root = Path(root)

    def _folder(self, model_id: str) -> Path:
        folder = self.root / checked_id(model_id)
        if folder.resolve().parent != self.root.resolve():  # (a symlink planted in the store, say)
            raise ModelNotFound(f"{model_id!r} is not under the model store")
        return folder

    def uri(self, model_id: str) -> str:
        return (self.root / checked_id(model_id) / ARTIFACT).resolve().as_uri()

    def save(self, model_id: str, artifact: bytes, metrics: dict[str, Any]) -> str:
        self.root.mkdir(parents=True, exist_ok=True)
        folder = self._folder(model_id)
        folder.mkdir(exist_ok=True)
        _write_atomically(folder / ARTIFACT, artifact)
        _write_atomically(folder / METRICS, orjson.dumps(sealed(artifact, metrics)))
        return self.uri(model_id)

    def artifact(self, model_id: str) -> bytes:
        metrics = self.metrics(model_id)  # whole models only
        with _reading(model_id, OSError):
            artifact = (self._folder(model_id) / ARTIFACT).read_bytes()
        return verified(model_id, artifact, metrics)

    def metrics(self, model_id: str) -> dict[str, Any]:
        with _reading(model_id, OSError):
            try:
                return orjson.loads((self._folder(model_id) / METRICS).read_bytes())
            except (FileNotFoundError, NotADirectoryError):
                raise ModelNotFound(model_id) from None

    def list(self) -> list[dict[str, Any]]:
        with _reading("the model list", OSError):
            if not self.root.is_dir():
                return []
            found = []
            for metrics_file in self.root.glob(f"*/{METRICS}"):
                found.append(orjson.loads(metrics_file.read_bytes()))
        return sorted(found, key=lambda model: model.get("created_at", 0))


def _write_atomically(path: Path, data: bytes) -> None:
    """Readers see the old file or the new one, never a part (and it is on disk)."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class S3ModelStore:
    """Any S3-compatible store (AWS, MinIO, moto); credentials the usual boto3 way (env, profile)."""

    def __init__(self, bucket: str, prefix: str, endpoint_url: str | None = None):
        import boto3  # only where S3 is configured
        from botocore.exceptions import BotoCoreError, ClientError

        self._errors = (BotoCoreError, ClientError, OSError)
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = boto3.client("s3", endpoint_url=endpoint_url or None)

    def _key(self, model_id: str, name: str) -> str:
        model_id = checked_id(model_id)
        return f"{self.prefix}/{model_id}/{name}" if self.prefix else f"{model_id}/{name}"

    def uri(self, model_id: str) -> str:
        return f"s3://{self.bucket}/{self._key(model_id, ARTIFACT)}"

    def save(self, model_id: str, artifact: bytes, metrics: dict[str, Any]) -> str:
        self.client.put_object(Bucket=self.bucket, Key=self._key(model_id, ARTIFACT), Body=artifact)
        self.client.put_object(
            Bucket=self.bucket, Key=self._key(model_id, METRICS), Body=orjson.dumps(sealed(artifact, metrics)),
            ContentType="application/json",
        )
        return self.uri(model_id)

    def _get(self, key: str) -> bytes:
        with _reading(key, *self._errors):
            try:
                return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            except self.client.exceptions.NoSuchKey:
                raise ModelNotFound(key) from None

    def artifact(self, model_id: str) -> bytes:
        metrics = self.metrics(model_id)
        return verified(model_id, self._get(self._key(model_id, ARTIFACT)), metrics)

    def metrics(self, model_id: str) -> dict[str, Any]:
        return orjson.loads(self._get(self._key(model_id, METRICS)))

    def list(self) -> list[dict[str, Any]]:
        found = []
        with _reading("the model list", *self._errors):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=f"{self.prefix}/" if self.prefix else ""
            )
            for page in pages:
                for item in page.get("Contents", []):
                    if item["Key"].endswith(f"/{METRICS}"):
                        found.append(orjson.loads(self._get(item["Key"])))
        return sorted(found, key=lambda model: model.get("created_at", 0))


def open_store(url: str, s3_endpoint_url: str | None = None) -> ModelStore:
    """`s3://bucket/prefix` or a local directory (a path, or `file:///path`)."""
    parts = urlsplit(url)
    if parts.scheme == "s3":
        if not parts.netloc:
            raise ValueError(f"MODEL_STORE_URL {url!r} names no bucket; use s3://bucket/prefix")
        return S3ModelStore(parts.netloc, parts.path, s3_endpoint_url)
    if parts.scheme == "file":
        return LocalModelStore(Path(parts.path))
    if parts.scheme:
        raise ValueError(f"MODEL_STORE_URL {url!r}: use a directory, file:///dir or s3://bucket/prefix")
    return LocalModelStore(Path(url))
