"""actors.cluster: RABBITMQ_URL's nodes, each process's order of them, and which of them answer."""

from __future__ import annotations

import random
import socket
import threading
import time

import pytest

from actors.cluster import NodeProbe, node_urls, shuffled
from actors.stats import namespace_for
from tests.support.stack import free_port

THREE = "amqp://u:p@n1:5672/prod; amqp://u:p@n2:5673/prod ;amqp://u:p@n3/prod"


def test_a_url_list_is_split_on_semicolons_in_order_and_one_url_is_a_list_of_one():
    assert node_urls(THREE) == ["amqp://u:p@n1:5672/prod", "amqp://u:p@n2:5673/prod", "amqp://u:p@n3/prod"]
    assert node_urls("amqp://127.0.0.1:5672/") == ["amqp://127.0.0.1:5672/"]


def test_a_host_list_shares_one_user_vhost_and_options_across_its_nodes():
    assert node_urls("amqp://u:p@rabbitmq:5672,rabbitmq-2:5672, rabbitmq-3/prod?heartbeat=30") == [
        "amqp://u:p@rabbitmq:5672/prod?heartbeat=30", "amqp://u:p@rabbitmq-2:5672/prod?heartbeat=30",
        "amqp://u:p@rabbitmq-3/prod?heartbeat=30"]


def test_nodes_naming_different_vhosts_are_refused_with_the_setting_named():
    with pytest.raises(ValueError, match="RABBITMQ_URL names 2 nodes with different vhosts"):
        node_urls("amqp://n1/a;amqp://n2/b")


def test_the_deployments_namespace_is_the_vhost_whether_one_node_or_several_are_given():
    assert namespace_for(THREE) == namespace_for("amqp://elsewhere:5672/prod") == "ingest-stats:prod"


def test_each_process_gets_its_own_order_of_the_nodes():
    urls = node_urls(THREE)
    orders = {tuple(shuffled(urls, random.Random(seed))) for seed in range(50)}
    assert len(orders) == 6  # every order of three turns up: processes spread over the nodes
    assert all(sorted(order) == sorted(urls) for order in orders)


def test_the_broker_is_given_every_node_in_this_processes_order():
    from actors import broker

    assert isinstance(broker.parameters, list) and len(broker.parameters) == 1  # the tests' one node


def test_the_probe_names_the_nodes_that_do_not_accept_a_connection():
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen()
    up = listening.getsockname()[1]
    down = free_port()
    try:
        probe = NodeProbe([f"amqp://127.0.0.1:{up}/v", f"amqp://127.0.0.1:{down}/v"])
        assert probe.cluster
        assert probe.read() == {"state": "degraded", "nodes": 2, "down": [f"127.0.0.1:{down}"]}
        alone = NodeProbe([f"amqp://127.0.0.1:{down}/v"])
        assert not alone.cluster and alone.read()["state"] == "down"
    finally:
        listening.close()
    assert NodeProbe([f"amqp://127.0.0.1:{up}/v"]).read()["state"] == "down"


def test_a_node_whose_name_does_not_resolve_in_time_is_down_and_holds_the_probe_no_longer_than_its_timeout(monkeypatch):
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen()
    up = listening.getsockname()[1]
    answer_lookup = threading.Event()
    real = socket.getaddrinfo

    def lookup(host, *args, **kwargs):
        if host == "stuck.example":  # a resolver that does not answer (create_connection's timeout misses it)
            answer_lookup.wait(30)
            raise socket.gaierror("no answer")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", lookup)
    probe = NodeProbe(["amqp://stuck.example:5672/v", f"amqp://127.0.0.1:{up}/v", "amqp://stuck.example:5673/v"],
                      timeout=0.3)
    try:
        started = time.monotonic()
        assert probe.read() == {"state": "degraded", "nodes": 3, "down": ["stuck.example:5672", "stuck.example:5673"]}
        assert time.monotonic() - started < 1.5, "the nodes are probed at once, each within two timeouts"
        probe._cached = None
        assert probe.read()["down"] == ["stuck.example:5672", "stuck.example:5673"]
        stuck = [thread for thread in threading.enumerate() if thread.name.startswith("node-probe stuck.example")]
        assert len(stuck) == 2 and all(thread.daemon for thread in stuck), "one hanging lookup per node, at most"
    finally:
        answer_lookup.set()
        listening.close()
