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
    assert {"rabbitmq", "redis", "api", "worker", "tasks", "trainer"} <= SERVICES.keys()


@pytest.mark.parametrize("service", ["api", "worker", "tasks", "trainer"])
def test_every_variable_set_for_the_app_is_a_setting(service):
    assert set(env(service)) <= SETTING_NAMES


@pytest.mark.parametrize("service", ["api", "worker"])
def test_the_app_reaches_rabbitmq_and_redis_by_their_service_names(service):
    def interpolated(url: str) -> str:  # as compose would, with a stand-in for each ${VARIABLE}
        return re.sub(r"\$\{[^}]*\}", "x", url)

    assert urlsplit(interpolated(env(service)["RABBITMQ_URL"])).hostname == "rabbitmq"
    assert urlsplit(interpolated(env(service)["REDIS_URL"])).hostname == "redis"


def test_the_api_publishes_the_port_it_listens_on_on_loopback_unless_api_bind_says_otherwise():
    port = env("api")["API_PORT"]
    assert f"${{API_BIND:-127.0.0.1}}:{port}:{port}" in SERVICES["api"]["ports"]
    assert env("api")["API_HOST"] == "0.0.0.0"


def test_the_workers_expose_their_metrics_port():
    assert env("worker")["PROMETHEUS_PORT"] in [str(port) for port in SERVICES["worker"]["expose"]]
    assert env("worker")["PROMETHEUS_HOST"] == "0.0.0.0"


def data_volume(service: str) -> str:
    """The service's mount of the data volume (the API also mounts its keys)."""
    (volume,) = [v for v in SERVICES[service]["volumes"] if not v.startswith("api-keys:")]
    return volume


def test_api_and_workers_share_the_csv_volume_at_the_csv_directory():
    mounts = {}
    for service in ("api", "worker"):
        name, target = data_volume(service).split(":")[:2]
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
    # Every worker group runs: the README says the container only needs the API started by hand.
    assert {"worker", "tasks", "trainer"} <= set(DEVCONTAINER["runServices"])
    overlay = yaml.safe_load(files[1].read_text())
    assert "..:" + DEVCONTAINER["workspaceFolder"] + ":cached" in overlay["services"][DEVCONTAINER["service"]]["volumes"]


def test_every_forwarded_port_is_served_by_a_service():
    for entry in DEVCONTAINER["forwardPorts"]:
        service, _, port = str(entry).rpartition(":")
        service = service or DEVCONTAINER["service"]
        offered = [str(p).split(":")[-1] for p in SERVICES[service].get("ports", [])]
        offered += [str(p) for p in SERVICES[service].get("expose", [])]
        assert port in offered, entry


def test_the_tasks_service_runs_the_task_worker_group_and_exposes_its_metrics():
    assert SERVICES["tasks"]["command"] == ["./entrypoint_dramatiq.sh", "tasks"]
    assert env("tasks")["TASK_PROMETHEUS_PORT"] in [str(port) for port in SERVICES["tasks"]["expose"]]
    assert env("tasks")["PROMETHEUS_HOST"] == "0.0.0.0"


def test_the_trainer_runs_the_model_worker_group_and_exposes_its_metrics():
    assert SERVICES["trainer"]["command"] == ["./entrypoint_dramatiq.sh", "ml"]
    assert env("trainer")["ML_PROMETHEUS_PORT"] in [str(port) for port in SERVICES["trainer"]["expose"]]
    assert env("trainer")["PROMETHEUS_HOST"] == "0.0.0.0"


def test_the_trainer_and_the_api_share_the_model_store_and_datasets():
    for service in ("api", "trainer"):
        name, target = data_volume(service).split(":")[:2]
        assert env(service)["MODEL_STORE_URL"].startswith(target + "/")
        assert env(service)["DATASET_DIR"].startswith(target + "/")
        assert name == data_volume("api").split(":")[0]


# -- No default credentials, nothing published beyond loopback (issue 10) ----------------------------

SHIPPED = [ROOT / "docker-compose.yml", ROOT / "docker-compose.cluster.yml", *sorted((ROOT / ".devcontainer").iterdir()), ROOT / ".env.example",
           ROOT / "config.py", ROOT / "Dockerfile", *sorted(p for p in (ROOT / "deploy").rglob("*") if p.is_file())]
ENV_EXAMPLE = dict(line.split("=", 1) for line in (ROOT / ".env.example").read_text().splitlines()
                   if line and not line.startswith("#"))
REQUIRED = {name for compose in ("docker-compose.yml", "docker-compose.cluster.yml")
            for name in re.findall(r"\$\{(\w+):\?", (ROOT / compose).read_text())}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_shipped_file_holds_a_default_credential(path):
    text = path.read_text().lower()
    for credential in ("guest:guest", "guest/guest", "admin/admin", "admin:admin", "password: admin",
                       "anonymous_enabled: \"true\""):
        assert credential not in text, credential


def test_every_password_compose_needs_comes_from_env_with_no_default_and_env_example_lists_it_empty():
    assert {"RABBITMQ_USER", "RABBITMQ_PASSWORD", "REDIS_PASSWORD", "GRAFANA_ADMIN_PASSWORD"} <= REQUIRED
    for name in REQUIRED:
        assert ENV_EXAMPLE.get(name) == "", f"{name} must be in .env.example, empty"
    assert ".env" in (ROOT / ".gitignore").read_text().split()


def test_rabbitmq_has_its_own_user_instead_of_guest_and_the_app_uses_it():
    rabbit = SERVICES["rabbitmq"]["environment"]
    assert rabbit["RABBITMQ_DEFAULT_USER"].startswith("${RABBITMQ_USER:?")
    assert rabbit["RABBITMQ_DEFAULT_PASS"].startswith("${RABBITMQ_PASSWORD:?")
    url = env("api")["RABBITMQ_URL"]
    assert "${RABBITMQ_USER:?" in url and "${RABBITMQ_PASSWORD:?" in url


def test_redis_needs_a_password_and_the_app_sends_it():
    assert "--requirepass" in SERVICES["redis"]["command"]
    assert env("api")["REDIS_URL"].startswith("redis://:${REDIS_PASSWORD:?")


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_every_published_port_binds_loopback(service):
    for published in SERVICES[service].get("ports", []):
        host = str(published).rsplit(":", 2)[0]
        assert host in ("127.0.0.1", "${API_BIND:-127.0.0.1}"), published


def test_grafana_has_no_anonymous_access_and_its_admin_password_comes_from_env():
    grafana = SERVICES["grafana"]["environment"]
    assert grafana["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:?")


def test_prometheus_scrapes_the_api_with_a_bearer_key_from_a_secret_kept_out_of_git():
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    (api_job,) = [job for job in config["scrape_configs"] if job["job_name"] == "api"]
    credentials = api_job["authorization"]["credentials_file"]
    assert api_job["authorization"]["type"] == "Bearer"
    (secret,) = SERVICES["prometheus"]["secrets"]
    assert credentials == f"/run/secrets/{secret}"
    secret_file = ROOT / COMPOSE["secrets"][secret]["file"]
    ignored = (secret_file.parent / ".gitignore").read_text().split()
    assert "*" in ignored


def test_the_api_reads_its_keys_from_a_volume_only_it_mounts_and_answers_prometheus_host_name():
    keys_dir = str(Path(env("api")["API_KEYS_FILE"]).parent)
    assert f"api-keys:{keys_dir}" in SERVICES["api"]["volumes"]
    assert not any(str(v).startswith("api-keys:") for name, service in SERVICES.items() if name != "api"
                   for v in service.get("volumes", []))
    assert "api" in env("api")["ALLOWED_HOSTS"].split()
    assert f"API_KEYS_FILE={env('api')['API_KEYS_FILE']}" in DOCKERFILE.replace(" ", "")


def test_the_devcontainer_stops_at_once_without_a_dot_env_and_says_what_to_do():
    command = DEVCONTAINER["initializeCommand"]
    secret = COMPOSE["secrets"]["prometheus_api_key"]["file"].removeprefix("./")
    assert command.startswith(f"test -f .env -a -f {secret} ||") and ".env.example" in command


# -- The 3-node cluster overlay (issue 13) ---------------------------------------------------------

CLUSTER = yaml.safe_load((ROOT / "docker-compose.cluster.yml").read_text())["services"]
CLUSTER_CONF = (ROOT / "deploy" / "rabbitmq" / "cluster.conf").read_text()
NODES = ["rabbitmq", "rabbitmq-2", "rabbitmq-3"]


def test_the_cluster_overlay_runs_three_nodes_that_name_each_other_in_their_formation_config():
    assert [name for name in CLUSTER if name.startswith("rabbitmq")] == NODES
    listed = re.findall(r"^cluster_formation\.classic_config\.nodes\.\d+ = rabbit@(\S+)$", CLUSTER_CONF, re.MULTILINE)
    assert listed == [CLUSTER[node]["hostname"] for node in NODES] == NODES
    for node in NODES:
        assert "./deploy/rabbitmq/cluster.conf:/etc/rabbitmq/conf.d/20-cluster.conf:ro" in CLUSTER[node]["volumes"]
        assert CLUSTER[node]["healthcheck"]["test"][0] == "CMD-SHELL"
        assert "ports" not in CLUSTER[node], "only the first node publishes, from docker-compose.yml"
    data = {CLUSTER[node]["volumes"][0].split(":")[0] for node in NODES}
    assert len(data) == 3, "each node keeps its own data"


def test_the_nodes_share_a_cookie_that_comes_from_env_with_no_default():
    for node in NODES:
        environment = CLUSTER[node]["environment"]
        assert environment["RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS"].startswith("-setcookie ${RABBITMQ_ERLANG_COOKIE:?")
        assert environment["RABBITMQ_DEFAULT_USER"].startswith("${RABBITMQ_USER:?")
    assert ENV_EXAMPLE.get("RABBITMQ_ERLANG_COOKIE") == ""


@pytest.mark.parametrize("service", ["api", "worker", "tasks", "trainer"])
def test_on_the_cluster_the_app_reaches_all_three_nodes_with_quorum_queues_and_waits_for_them(service):
    from actors.cluster import node_urls

    environment = CLUSTER[service]["environment"]
    assert set(environment) <= SETTING_NAMES
    assert environment["RABBITMQ_QUEUE_TYPE"] == "quorum"
    urls = node_urls(re.sub(r"\$\{[^}]*\}", "x", environment["RABBITMQ_URL"]))
    assert [urlsplit(url).hostname for url in urls] == NODES
    assert all(urlsplit(url).username == "x" for url in urls), "the user from .env, on every node"
    assert {name: dependency["condition"] for name, dependency in CLUSTER[service]["depends_on"].items()} == {
        node: "service_healthy" for node in NODES}
