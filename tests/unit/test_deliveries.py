"""DeliveryLimit's count against a real Redis, its hooks called as Dramatiq calls them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from actors.deliveries import DeliveryLimit

REDIS = "redis://127.0.0.1:6379/0"


@dataclass
class Delivery:
    """What the middleware reads and calls on one delivery of a message."""

    message_id: str
    redelivered: bool
    actor_name: str = "ingest"
    failed: bool = False
    exceptions: list = field(default_factory=list)

    def stuff_exception(self, error: BaseException) -> None:
        self.exceptions.append(error)

    def fail(self) -> None:
        self.failed = True


def start(limit: DeliveryLimit, message_id: str, redelivered: bool) -> Delivery:
    delivery = Delivery(message_id, redelivered)
    limit.before_process_message(None, delivery)
    return delivery


def test_a_message_killing_its_worker_is_refused_on_the_delivery_that_reaches_the_limit():
    limit, message_id = DeliveryLimit(REDIS, f"test-{uuid.uuid4()}", max_deliveries=2), str(uuid.uuid4())
    assert not start(limit, message_id, redelivered=False).failed  # dies: nothing ran its after hook
    assert not start(DeliveryLimit(REDIS, limit.namespace, 2), message_id, redelivered=True).failed  # died once
    refused = start(DeliveryLimit(REDIS, limit.namespace, 2), message_id, redelivered=True)
    assert refused.failed and "worker died 2 times" in str(refused.exceptions[0])


def test_a_message_a_graceful_shutdown_gave_up_on_is_not_counted_as_a_death():
    """A worker stopped during a disk outage leaves its waiting messages unacked after its timeout."""
    namespace, message_id = f"test-{uuid.uuid4()}", str(uuid.uuid4())
    for redelivered in (False, True, True):  # interrupted three times, by three restarts
        limit = DeliveryLimit(REDIS, namespace, max_deliveries=1)
        assert not start(limit, message_id, redelivered).failed
        limit.after_worker_shutdown(None, None)
    dying = DeliveryLimit(REDIS, namespace, max_deliveries=1)
    assert not start(dying, message_id, redelivered=True).failed, "no death so far"
    assert start(DeliveryLimit(REDIS, namespace, 1), message_id, redelivered=True).failed, "then it died once"


def test_a_shutdown_takes_back_only_the_messages_still_running():
    namespace, done, running = f"test-{uuid.uuid4()}", str(uuid.uuid4()), str(uuid.uuid4())
    limit = DeliveryLimit(REDIS, namespace, max_deliveries=1)
    limit.after_process_message(None, start(limit, done, redelivered=False))
    start(limit, running, redelivered=False)
    limit.after_worker_shutdown(None, None)
    assert limit._redis().get(limit._key(running)) == b"-1"
    assert limit._redis().get(limit._key(done)) is None
