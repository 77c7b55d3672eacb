"""Two worker hosts in network namespaces, each writing its own shard; one is cut off from the broker mid-load.

Host A's link goes down with no goodbye: RabbitMQ learns it only when A's
heartbeats stop (`heartbeat=4` in the workers' URL: about 8 s), then returns
A's unacked messages to the queue, and host B takes them (any that A had
written but could not ack are written again by B: the merge keeps one copy).
Then the link comes back and A consumes again. Merged, the two shards hold
every 2xx exactly once.
"""

from __future__ import annotations

import pytest

from pipeline.shard_files import shard_files
from pipeline.shards import merge
from tests.faults.test_cluster import Load
from tests.support import cluster as clusters
from tests.support import netns
from tests.support.csv_check import assert_rows_match, count_rows
from tests.support.rabbit import queue_state
from tests.support.stack import Stack
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.cluster]


@pytest.fixture()
def hosts(tmp_path):
    for reason in (clusters.available(), netns.available()):
        if reason:
            pytest.fail(reason)
    made = [netns.WorkerHost("a"), netns.WorkerHost("b")]
    yield made
    for host in made:
        host.remove()


@pytest.fixture()
def broker(tmp_path, hosts):
    """One RabbitMQ node of the test's own, on loopback (the API) and on each host's link."""
    node = clusters.Cluster(tmp_path / "broker", size=1, listen=("127.0.0.1", *(host.address for host in hosts)))
    node.start()
    yield node
    node.stop()


def shard_size(stack: Stack) -> int:
    return stack.csv_path.stat().st_size if stack.csv_path.exists() else 0


def test_a_worker_host_partitioned_from_the_broker_hands_its_messages_to_the_other_and_merged_each_is_once(
        tmp_path, hosts, broker):
    vhost = broker.add_vhost("partition")
    for directory in ("api", "host-a", "host-b"):
        (tmp_path / directory).mkdir()
    api = Stack(tmp_path / "api", broker.url(vhost), processes=1)
    workers = [Stack(tmp_path / f"host-{label}", broker.url(vhost, host.address, "heartbeat=4"), processes=1,
                     threads=8, command_prefix=host.prefix, csv_host=label)
               for label, host in zip("ab", hosts)]
    try:
        for stack in workers:
            stack.start_workers()
        wait_for(lambda: queue_state(api.rabbitmq_url, "ingest")[1] >= 2, timeout=60, what="both hosts consuming")
        api.start_api()
        host_a, host_b = workers
        load = Load(api).start()
        wait_for(lambda: shard_size(host_a) > 300_000 and shard_size(host_b) > 300_000, timeout=60,
                 what="both hosts writing")

        node = broker.nodes[0]
        mark = broker.log_size(node)
        hosts[0].partition()
        try:
            wait_for(lambda: "missed heartbeats" in broker.log_since(node, mark), timeout=45, interval=0.5,
                     what=lambda: "RabbitMQ to close host A's connections for missed heartbeats; it logged since the "
                                  f"cut:\n{broker.log_since(node, mark)[-4000:]}")
            cut_off = shard_size(host_a)
            before = shard_size(host_b)
            wait_for(lambda: shard_size(host_b) > before + 300_000, timeout=60, interval=0.5,
                     what="host B to go on writing, A's messages included")
            assert shard_size(host_a) == cut_off, "host A writes nothing it was not already holding"
        finally:
            hosts[0].heal()
        wait_for(lambda: queue_state(api.rabbitmq_url, "ingest")[1] >= 2, timeout=60, interval=0.5,
                 what="host A to consume again once healed")
        healed = shard_size(host_a)
        wait_for(lambda: shard_size(host_a) > healed + 100_000, timeout=60, interval=0.5,
                 what="host A writing again")
        load.stop()

        accepted = load.accepted()
        assert {answer.status for _, answer in load.answers} <= {200, 202}
        wait_for(lambda: queue_state(api.rabbitmq_url, "ingest")[0] == 0, timeout=120, what="an empty queue")
        files = shard_files(host_a.csv_path) + shard_files(host_b.csv_path)
        expected = sum(len(payload["data"]["preds"]) for payload in accepted.values())

        def merged_rows() -> int:
            merge(files, tmp_path / "merged.csv", memory_limit="256MB")
            return count_rows(tmp_path / "merged.csv", set(accepted)) >= expected

        wait_for(merged_rows, timeout=120, interval=2, what=f"{expected} rows across the two shards")
        assert_rows_match(tmp_path / "merged.csv", accepted)
    finally:
        for stack in (api, *workers):
            stack.stop()
