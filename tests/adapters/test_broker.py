"""The broker channel against a real Redis: batches as large as the prefetch limit, kombu's guarantees kept."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from kombu import Connection, Consumer, Producer, Queue

from testbed.servers import RedisServer

QUEUE = Queue("files", routing_key="files")
Handler = Callable[[Any, Any], None]


@pytest.fixture
def broker(env: dict[str, str], redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A client of the broker's database, emptied for the test."""
    client = redis_server.client(0)
    yield client
    client.close()


def connect(server: RedisServer) -> Connection:
    return Connection(server.url(0), transport="cachetasks.celery.broker:Transport")


@pytest.fixture
def connection(broker: redis.Redis, redis_server: RedisServer) -> Iterator[Connection]:
    with connect(redis_server) as conn:
        yield conn


def publish(conn: Connection, count: int) -> None:
    with conn.channel() as channel:
        producer = Producer(channel)
        for i in range(count):
            producer.publish({"n": i}, exchange="", routing_key=QUEUE.name, declare=[QUEUE], serializer="json")


def consumer(conn: Connection, handler: Handler, *, prefetch: int) -> Consumer:
    c = Consumer(conn.default_channel, [QUEUE], callbacks=[handler], accept=["json"])
    c.qos(prefetch_count=prefetch)
    c.consume()
    return c


def one_turn(conn: Connection) -> None:
    conn.drain_events(timeout=2)


def acking(got: list[int]) -> Handler:
    """A handler that records each message's number and acknowledges it at once."""

    def handle(body: Any, message: Any) -> None:
        got.append(body["n"])
        message.ack()

    return handle


def test_a_worker_with_room_for_eight_takes_eight_messages_in_one_turn_in_order(
    connection: Connection, broker: redis.Redis
) -> None:
    # Given 20 messages queued
    publish(connection, 20)
    got: list[int] = []
    consumer(connection, lambda body, message: got.append(body["n"]), prefetch=8)
    # When the consumer, with room for 8 unacknowledged messages, takes one turn
    one_turn(connection)
    # Expect the first 8, in order, each kept as unacknowledged until acknowledged; the rest still queued
    assert got == list(range(8))
    assert broker.hlen("unacked") == 8 and broker.zcard("unacked_index") == 8
    assert broker.llen(QUEUE.name) == 12


def test_messages_acknowledged_as_they_are_delivered_leave_nothing_unacknowledged(
    connection: Connection, broker: redis.Redis
) -> None:
    publish(connection, 5)
    got: list[int] = []
    consumer(connection, acking(got), prefetch=16)
    one_turn(connection)
    assert got == [0, 1, 2, 3, 4]
    assert broker.hlen("unacked") == 0 and broker.zcard("unacked_index") == 0


def test_a_prefetch_limit_of_one_takes_one_message_per_turn(connection: Connection, broker: redis.Redis) -> None:
    publish(connection, 3)
    got: list[int] = []
    consumer(connection, acking(got), prefetch=1)
    one_turn(connection)
    assert got == [0]
    assert broker.llen(QUEUE.name) == 2


def test_the_messages_after_a_delivery_that_raised_go_back_to_the_head_of_the_queue(
    connection: Connection, broker: redis.Redis
) -> None:
    # Given 6 messages, and a consumer whose handler fails on the third
    publish(connection, 6)
    got: list[int] = []

    def handle(body: Any, message: Any) -> None:
        if body["n"] == 2:
            raise RuntimeError("handler failed")
        got.append(body["n"])
        message.ack()

    consumer(connection, handle, prefetch=16)
    # When one turn takes all six and the third delivery raises
    with pytest.raises(RuntimeError, match="handler failed"):
        one_turn(connection)
    # Expect the three after it to be queued again, first in line and in order; none lost
    assert got == [0, 1]
    assert broker.llen(QUEUE.name) == 3
    one_turn(connection)
    assert got == [0, 1, 3, 4, 5]


def test_a_message_rejected_for_requeue_during_its_batch_is_queued_again(
    connection: Connection, broker: redis.Redis
) -> None:
    publish(connection, 3)
    seen: list[int] = []

    def handle(body: Any, message: Any) -> None:
        seen.append(body["n"])
        if body["n"] == 1 and seen.count(1) == 1:
            message.reject(requeue=True)
        else:
            message.ack()

    consumer(connection, handle, prefetch=16)
    one_turn(connection)
    assert seen == [0, 1, 2]
    assert broker.llen(QUEUE.name) == 1 and broker.hlen("unacked") == 0
    one_turn(connection)
    assert seen == [0, 1, 2, 1]


def test_acknowledgements_made_after_delivery_are_written_together_before_the_next_read(
    connection: Connection, broker: redis.Redis
) -> None:
    """Five messages acknowledged by the pool's threads after their batch: one ZREM for all five, at the next read."""
    # Given five messages delivered in one turn and held unacknowledged, as copies waiting for a thread
    publish(connection, 5)
    held: list[Any] = []
    consumer(connection, lambda body, message: held.append(message), prefetch=16)
    one_turn(connection)
    assert broker.hlen("unacked") == 5
    broker.config_resetstat()
    # When each is acknowledged, then the consumer reads again (one more message queued meanwhile)
    for message in held:
        message.ack()
    publish(connection, 1)
    one_turn(connection)
    # Expect the five removed in one round trip, and only the new message unacknowledged
    assert broker.info("commandstats")["cmdstat_zrem"]["calls"] == 1
    assert broker.hlen("unacked") == 1 and broker.zcard("unacked_index") == 1


def test_acknowledgements_not_yet_written_are_written_when_the_channel_closes(
    broker: redis.Redis, redis_server: RedisServer
) -> None:
    """A worker stopping right after its copies started leaves nothing unacknowledged, and nothing to deliver again."""
    with connect(redis_server) as conn:
        publish(conn, 3)
        held: list[Any] = []
        consumer(conn, lambda body, message: held.append(message), prefetch=16)
        one_turn(conn)
        for message in held:
            message.ack()
    assert broker.hlen("unacked") == 0 and broker.zcard("unacked_index") == 0
    assert broker.llen(QUEUE.name) == 0
