"""Prometheus and Grafana files agree with docker-compose.yml and with the metrics the code exports."""

from __future__ import annotations

import ast
import functools
import importlib.util
import json
import re
import urllib.request
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SERVICES = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
PROMETHEUS = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
JOBS = {job["job_name"]: job for job in PROMETHEUS["scrape_configs"]}
PROVISIONING = DEPLOY / "grafana" / "provisioning"
(DATASOURCE,) = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())["datasources"]
PROVIDERS = yaml.safe_load((PROVISIONING / "dashboards" / "dashboards.yml").read_text())["providers"]
DASHBOARD_FILES = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
DASHBOARDS = {path.name: json.loads(path.read_text()) for path in DASHBOARD_FILES}
PANELS = [(name, panel) for name, dashboard in DASHBOARDS.items() for panel in dashboard["panels"]]

#: Where the grafana image reads provisioning files (its GF_PATHS_PROVISIONING default).
GRAFANA_PROVISIONING_PATH = "/etc/grafana/provisioning"
RABBITMQ_PROMETHEUS_PORT = 15692
LOCAL_RABBITMQ_METRICS = f"http://127.0.0.1:{RABBITMQ_PROMETHEUS_PORT}"

REQUIRED_PANELS = {
    "HTTP requests/s by route and status",
    "Enqueue failures/s",
    "Queue depth (ready + unacked)",
    "Rows written/s",
    "Retries/s",
    "Dead-letter queue depth",
    "Dead-lettered messages/s",
    "POST latency p50/p95/p99",
    "Publish latency p99",
    "fsync latency p99",
}

#: The families /metrics/detailed can be asked for, with the metrics each returns (prefixed
#: rabbitmq_detailed_). Source: the rabbitmq_prometheus plugin's collector,
#: deps/rabbitmq_prometheus/src/collectors/prometheus_rabbitmq_core_metrics_collector.erl in
#: rabbitmq-server (same names from 3.10 to 3.13), documented at https://www.rabbitmq.com/docs/prometheus
#: ("/metrics/detailed" endpoint, "family" query parameter).
RABBITMQ_DETAILED_FAMILIES = {
    "queue_coarse_metrics": [
        "queue_messages_ready",
        "queue_messages_unacked",
        "queue_messages",
        "queue_process_reductions_total",
    ],
    "queue_consumer_count": ["queue_consumers"],
}
#: Prometheus itself records `up` (1 or 0) for every target it scrapes.
PROMETHEUS_OWN = {"up"}

#: The sample names prometheus_client exposes per metric type (no _created: multiprocess mode has none).
SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count")}
CONSTRUCTORS = {"Counter": "counter", "Gauge": "gauge", "Histogram": "histogram", "Summary": "summary"}

PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or", "unless",
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values",
    "group", "inf", "nan",
}  # fmt: skip


def env(service: str) -> dict[str, str]:
    return {name: str(value) for name, value in SERVICES[service].get("environment", {}).items()}


def mounts(service: str) -> dict[str, tuple[Path, str]]:
    """Bind mounts of a service: container path -> (host path, mode)."""
    found = {}
    for volume in SERVICES[service].get("volumes", []):
        source, target, *mode = volume.split(":")
        if source.startswith("."):
            found[target] = ((ROOT / source).resolve(), mode[0] if mode else "rw")
    return found


def host_path(service: str, container_path: str) -> Path:
    """The host file or directory a container path of `service` comes from, through its bind mounts."""
    for target, (source, _) in mounts(service).items():
        if container_path == target or container_path.startswith(target.rstrip("/") + "/"):
            return source / Path(container_path).relative_to(target)
    raise AssertionError(f"{service}: nothing mounted at {container_path}")


def sample_names(family: str, kind: str) -> set[str]:
    return {family + suffix for suffix in SUFFIXES[kind]}


def api_metric_names() -> set[str]:
    import app.metrics
    from prometheus_client.metrics import MetricWrapperBase

    names = set()
    for value in vars(app.metrics).values():
        if isinstance(value, MetricWrapperBase):
            for family in value.describe():
                names |= sample_names(family.name, family.type)
    return names


def names_constructed_in(path: Path) -> set[str]:
    """Metric names a module creates in its process-boot hook (reading it, not running it: running
    it would touch the multiprocess files of any worker using the same directory)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call):
            continue
        callee = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
        if callee not in CONSTRUCTORS:
            continue
        name = node.args[0] if node.args else None
        assert isinstance(name, ast.Constant) and isinstance(name.value, str), f"{path}:{node.lineno}: name not literal"
        assert not {kw.arg for kw in node.keywords} & {"namespace", "subsystem", "unit"}, f"{path}:{node.lineno}"
        kind = CONSTRUCTORS[callee]
        names |= sample_names(name.value.removesuffix("_total") if kind == "counter" else name.value, kind)
    assert names, f"no metrics found in {path}"
    return names


def rabbitmq_metric_names() -> set[str]:
    return {
        "rabbitmq_detailed_" + name
        for family in JOBS["rabbitmq"]["params"]["family"]
        for name in RABBITMQ_DETAILED_FAMILIES[family]
    }


@functools.cache
def exported_metric_names() -> set[str]:
    dramatiq_prometheus = Path(importlib.util.find_spec("dramatiq.middleware.prometheus").origin)
    return (
        api_metric_names()
        | names_constructed_in(ROOT / "actors" / "metrics.py")
        | names_constructed_in(dramatiq_prometheus)
        | rabbitmq_metric_names()
        | PROMETHEUS_OWN
    )


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects."""
    expr = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`', '""', expr)  # strings
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", expr)  # label matchers, ranges
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)  # label lists
    names = set()
    for match in re.finditer(r"(?<![\w.])[A-Za-z_:][\w:]*", expr):
        if expr[match.end() :].lstrip().startswith("(") or match.group().lower() in PROMQL_WORDS:
            continue  # a function or an operator
        names.add(match.group())
    return names


def panel_exprs(panel: dict) -> list[str]:
    return [target["expr"] for target in panel["targets"]]


def all_exprs() -> list[str]:
    return [expr for _, panel in PANELS for expr in panel_exprs(panel)]


# Prometheus: targets match the compose services.


def test_prometheus_scrapes_every_5_seconds():
    assert PROMETHEUS["global"]["scrape_interval"] == "5s"


def test_prometheus_scrapes_the_api_on_its_port_and_metrics_path():
    from app.main import app
    from app.metrics import metrics_endpoint

    (target,) = JOBS["api"]["static_configs"][0]["targets"]
    assert target == f"api:{env('api')['API_PORT']}"
    paths = [route.path for route in app.routes if getattr(route, "endpoint", None) is metrics_endpoint]
    assert paths == [JOBS["api"].get("metrics_path", "/metrics")]


@pytest.mark.parametrize(("service", "port_setting"), [
    ("worker", "PROMETHEUS_PORT"), ("tasks", "TASK_PROMETHEUS_PORT"), ("trainer", "ML_PROMETHEUS_PORT"),
])
def test_prometheus_finds_every_replica_of_each_worker_group_on_its_metrics_port(service, port_setting):
    (discovery,) = JOBS[service]["dns_sd_configs"]
    assert discovery["names"] == [service] and discovery["type"] == "A"
    assert str(discovery["port"]) == env(service)[port_setting]
    assert env(service)[port_setting] in [str(port) for port in SERVICES[service]["expose"]]
    # Replicas of a scaled service cannot share a host port or a container name.
    assert "ports" not in SERVICES[service] and "container_name" not in SERVICES[service]


def test_prometheus_scrapes_rabbitmq_per_queue_metrics():
    job = JOBS["rabbitmq"]
    assert job["static_configs"][0]["targets"] == [f"rabbitmq:{RABBITMQ_PROMETHEUS_PORT}"]
    assert str(RABBITMQ_PROMETHEUS_PORT) in [str(port) for port in SERVICES["rabbitmq"]["expose"]]
    assert job["metrics_path"] == "/metrics/detailed"
    assert set(job["params"]["family"]) <= RABBITMQ_DETAILED_FAMILIES.keys()


def test_compose_mounts_the_prometheus_config_where_prometheus_reads_it():
    flags = dict(arg.lstrip("-").split("=", 1) for arg in SERVICES["prometheus"]["command"])
    config = flags["config.file"]
    assert host_path("prometheus", config) == DEPLOY / "prometheus" / "prometheus.yml"
    assert mounts("prometheus")[config][1] == "ro"
    assert "127.0.0.1:9090:9090" in SERVICES["prometheus"]["ports"]


# Grafana: provisioning is mounted where Grafana looks, and points at what is mounted.


def test_compose_mounts_grafana_provisioning_and_dashboards_read_only():
    assert host_path("grafana", GRAFANA_PROVISIONING_PATH) == PROVISIONING
    assert all(mode == "ro" for _, mode in mounts("grafana").values())
    assert "127.0.0.1:3000:3000" in SERVICES["grafana"]["ports"]


def test_every_dashboard_provider_reads_a_mounted_directory_of_dashboards():
    for provider in PROVIDERS:
        assert provider["type"] == "file"
        directory = host_path("grafana", provider["options"]["path"])
        assert sorted(directory.glob("*.json")) == DASHBOARD_FILES != []


def test_grafana_home_dashboard_is_a_mounted_dashboard():
    home = env("grafana")["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert host_path("grafana", home) in DASHBOARD_FILES


def test_the_datasource_is_the_compose_prometheus():
    url = urlsplit(DATASOURCE["url"])
    assert DATASOURCE["type"] == "prometheus" and DATASOURCE["isDefault"] is True
    assert url.hostname == "prometheus" and f"127.0.0.1:{url.port}:{url.port}" in SERVICES["prometheus"]["ports"]
    assert url.port == 9090 and not any("web.listen-address" in arg for arg in SERVICES["prometheus"]["command"])
    assert DATASOURCE["jsonData"]["timeInterval"] == PROMETHEUS["global"]["scrape_interval"]


# Dashboards: panels use the provisioned datasource and only metrics that exist.


def test_every_panel_and_query_uses_the_provisioned_datasource():
    for name, panel in PANELS:
        for source in [panel["datasource"]] + [target["datasource"] for target in panel["targets"]]:
            assert source == {"type": "prometheus", "uid": DATASOURCE["uid"]}, (name, panel["title"])


def test_the_dashboard_has_the_operating_panels():
    titles = [panel["title"] for _, panel in PANELS]
    assert REQUIRED_PANELS <= set(titles)
    assert len(titles) == len(set(titles))


def test_panels_are_well_formed():
    for dashboard in DASHBOARDS.values():
        ids = [panel["id"] for panel in dashboard["panels"]]
        assert len(ids) == len(set(ids)), "Grafana needs unique panel ids"
        assert dashboard["uid"]
        for panel in dashboard["panels"]:
            refs = [target["refId"] for target in panel["targets"]]
            assert refs and len(refs) == len(set(refs)), panel["title"]
            assert all(expr.strip() for expr in panel_exprs(panel)), panel["title"]


def test_the_metric_name_reader_finds_names_not_functions_labels_or_durations():
    expr = (
        'histogram_quantile(0.99, sum by (le, route) (rate(a_bucket{method="POST", x=~"b(c)"}[$__rate_interval])))'
        " / on(instance) group_left(x) b_total offset 5m * 1e3 + sum(c) without (d)"
    )
    assert metric_names(expr) == {"a_bucket", "b_total", "c"}


@pytest.mark.parametrize(("dashboard", "panel"), PANELS, ids=[panel["title"] for _, panel in PANELS])
def test_every_metric_a_panel_uses_is_exported(dashboard, panel):
    exported = exported_metric_names()
    for expr in panel_exprs(panel):
        used = metric_names(expr)
        assert used, expr
        assert used <= exported, f"{dashboard} / {panel['title']}: unknown {sorted(used - exported)}"


def test_queries_only_name_configured_scrape_jobs():
    jobs = {job for expr in all_exprs() for job in re.findall(r'\bjob\s*=~?\s*"([^"]*)"', expr)}
    assert jobs <= JOBS.keys()


def test_rabbitmq_names_exist_on_the_local_broker():
    """The same request Prometheus makes, to the local broker, when its rabbitmq_prometheus is on."""
    job = JOBS["rabbitmq"]
    url = LOCAL_RABBITMQ_METRICS + job["metrics_path"] + "?" + urlencode(job["params"], doseq=True)
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            body = response.read().decode()
    except OSError:
        pytest.skip(f"rabbitmq_prometheus not reachable at {LOCAL_RABBITMQ_METRICS}")
    lines = body.splitlines()
    live = {line.split()[2] for line in lines if line.startswith("# TYPE ")}
    live |= {re.match(r"[^{\s]+", line)[0] for line in lines if line and not line.startswith("#")}
    if not any(name.startswith("rabbitmq_detailed_queue_") for name in live):
        pytest.skip("the local broker has no queues to report on")
    used = {name for expr in all_exprs() for name in metric_names(expr) if name.startswith("rabbitmq_")}
    assert used <= live
    assert rabbitmq_metric_names() <= live
