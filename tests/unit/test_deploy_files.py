"""docker-compose.yml, the Dockerfile and the devcontainer agree with the code (no Docker here)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from config import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
DEVCONTAINER = json.loads((ROOT / ".devcontainer" / "devcontainer.json").read_text())
DOCKERFILE = (ROOT / "Dockerfile").read_text()
SETTING_NAMES = {name.upper() for name in Settings.model_fields}


def env(service: str) -> dict[str, str]:
    return {name: str(value) for name, value in SERVICES[service]["environment"].items()}


def test_compose_runs_the_broker_redis_api_and_workers():
    assert {"rabbitmq", "redis", "api", "worker", "trainer"} <= SERVICES.keys()


@pytest.mark.parametrize("service", ["api", "worker", "trainer"])
def test_every_variable_set_for_the_app_is_a_setting(service):
    assert set(env(service)) <= SETTING_NAMES


@pytest.mark.parametrize("service", ["api", "worker"])
def test_the_app_reaches_rabbitmq_and_redis_by_their_service_names(service):
    assert urlsplit(env(service)["RABBITMQ_URL"]).hostname == "rabbitmq"
    assert urlsplit(env(service)["REDIS_URL"]).hostname == "redis"


def test_the_api_publishes_the_port_it_listens_on():
    port = env("api")["API_PORT"]
    assert f"{port}:{port}" in SERVICES["api"]["ports"]
    assert env("api")["API_HOST"] == "0.0.0.0"


def test_the_workers_expose_their_metrics_port():
    assert env("worker")["PROMETHEUS_PORT"] in [str(port) for port in SERVICES["worker"]["expose"]]
    assert env("worker")["PROMETHEUS_HOST"] == "0.0.0.0"


def test_api_and_workers_share_the_csv_volume_at_the_csv_directory():
    mounts = {}
    for service in ("api", "worker"):
        (volume,) = SERVICES[service]["volumes"]
        name, target = volume.split(":")[:2]
        assert str(Path(env(service)["CSV_PATH"]).parent) == target
        mounts[service] = name
    assert mounts["api"] == mounts["worker"]
    assert mounts["api"] in COMPOSE["volumes"]


@pytest.mark.parametrize("service", ["api", "worker"])
def test_the_app_waits_for_healthy_dependencies(service):
    for dependency in ("rabbitmq", "redis"):
        assert SERVICES[service]["depends_on"][dependency]["condition"] == "service_healthy"
        assert "test" in SERVICES[dependency]["healthcheck"]


@pytest.mark.parametrize(("service", "script"), [("api", "entrypoint_api.sh"), ("worker", "entrypoint_dramatiq.sh")])
def test_each_role_runs_its_entrypoint_from_the_image(service, script):
    assert SERVICES[service]["command"] == [f"./{script}"]
    assert script in DOCKERFILE and (ROOT / script).exists()


def test_workers_get_time_to_finish_their_messages_on_stop():
    grace = SERVICES["worker"]["stop_grace_period"]
    shutdown_ms = int(re.search(r"--worker-shutdown-timeout (\d+)", (ROOT / "entrypoint_dramatiq.sh").read_text())[1])
    assert int(grace.rstrip("s")) * 1000 > shutdown_ms


def test_the_image_runs_as_a_non_root_user():
    users = re.findall(r"^USER (\S+)", DOCKERFILE, flags=re.MULTILINE)
    assert users and users[-1] not in ("root", "0")


def test_the_image_copies_every_package_and_module_the_app_imports():
    copied = " ".join(line for line in DOCKERFILE.splitlines() if line.startswith("COPY"))
    for needed in ("app", "actors", "pipeline", "config.py", "logs.py", "entrypoint.sh", "requirements.txt"):
        assert re.search(rf"\b{re.escape(needed)}\b", copied), needed
    assert re.search(r"^CMD \[\"\./entrypoint\.sh\"\]", DOCKERFILE, flags=re.MULTILINE)


def test_the_devcontainer_uses_existing_compose_files_and_services():
    base = ROOT / ".devcontainer"
    files = [(base / name).resolve() for name in DEVCONTAINER["dockerComposeFile"]]
    assert all(path.exists() for path in files)
    assert DEVCONTAINER["service"] in SERVICES
    assert set(DEVCONTAINER["runServices"]) <= SERVICES.keys()
    overlay = yaml.safe_load(files[1].read_text())
    assert "..:" + DEVCONTAINER["workspaceFolder"] + ":cached" in overlay["services"][DEVCONTAINER["service"]]["volumes"]


def test_every_forwarded_port_is_served_by_a_service():
    for entry in DEVCONTAINER["forwardPorts"]:
        service, _, port = str(entry).rpartition(":")
        service = service or DEVCONTAINER["service"]
        offered = [str(p).split(":")[-1] for p in SERVICES[service].get("ports", [])]
        offered += [str(p) for p in SERVICES[service].get("expose", [])]
        assert port in offered, entry


def test_the_trainer_runs_the_model_worker_group_and_exposes_its_metrics():
    assert SERVICES["trainer"]["command"] == ["./entrypoint_dramatiq.sh", "ml"]
    assert env("trainer")["ML_PROMETHEUS_PORT"] in [str(port) for port in SERVICES["trainer"]["expose"]]
    assert env("trainer")["PROMETHEUS_HOST"] == "0.0.0.0"


def test_the_trainer_and_the_api_share_the_model_store_and_datasets():
    for service in ("api", "trainer"):
        (volume,) = SERVICES[service]["volumes"]
        name, target = volume.split(":")[:2]
        assert env(service)["MODEL_STORE_URL"].startswith(target + "/")
        assert env(service)["DATASET_DIR"].startswith(target + "/")
        assert name == SERVICES["api"]["volumes"][0].split(":")[0]
