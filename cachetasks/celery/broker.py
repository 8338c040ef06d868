"""kombu's Redis transport, taking as many messages per round trip as the prefetch limit allows.

kombu's channel takes one message per `BRPOP`, each through a turn of the worker's event loop,
and writes each one's unacknowledged copy in a round trip of its own: about 0.8 ms of a
worker's CPU per message, more than copying a 256 KiB file from a local folder costs. This
channel follows each `BRPOP` with one `RPOP key count` for the rest of what the prefetch
limit allows from the same list, and writes the unacknowledged copies of the whole batch in
one pipeline. Acknowledgements (made by the pool's threads as copies start) are written
together too: in the next batch's pipeline, before the channel's next `BRPOP`, or when it
closes, so within a second (the `BRPOP` timeout) even when no message follows. Delivery, the
prefetch limit and the restore of unacknowledged messages work as in kombu; a worker whose
prefetch limit is one message (the collector) takes one at a time, as before. A worker killed
between an acknowledgement and its write leaves the message's copy unacknowledged: kombu
delivers it again after the visibility timeout, and the copy finds its file cached.

It also keeps one redis-py client per channel: kombu builds a fresh `redis.Redis` for every
acknowledgement, publish and queue operation, and building one fills its table of ~170
response callbacks. A client is thread-safe and holds no connection of its own.
"""

from __future__ import annotations

import contextlib
import threading
from queue import Empty
from time import time
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads

MAX_BATCH = 256  # messages per round trip when the prefetch limit is off (0: unlimited)


class QoS(kombu_redis.QoS):
    """kombu's, with the unacknowledged-message bookkeeping of a batch, and acknowledgements, written in pipelines."""

    batch: Any = None  # the pipeline of the batch being delivered, if any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._acked: list[str] = []  # acknowledged, their unacknowledged copies not yet removed
        self._acked_lock = threading.Lock()  # the pool's threads acknowledge; the event loop writes

    def append(self, message: Any, delivery_tag: str) -> None:
        if self.batch is None:
            super().append(message, delivery_tag)
            return
        delivery = message.delivery_info
        self.batch.zadd(self.unacked_index_key, {delivery_tag: time()}).hset(
            self.unacked_key, delivery_tag, dumps([message._raw, delivery["exchange"], delivery["routing_key"]])
        )
        virtual.QoS.append(self, message, delivery_tag)

    def ack(self, delivery_tag: str) -> None:
        with self._acked_lock:
            self._acked.append(delivery_tag)
        virtual.QoS.ack(self, delivery_tag)  # the prefetch room frees at once

    def write_acks(self, pipe: Any = None) -> None:
        """Remove the unacknowledged copies of the messages acknowledged since the last write: queued
        in `pipe` (after its batch's own copies), or in one round trip."""
        with self._acked_lock:
            tags, self._acked = self._acked, []
        if not tags:
            return
        if pipe is not None:
            pipe.zrem(self.unacked_index_key, *tags).hdel(self.unacked_key, *tags)
            return
        try:
            with self.channel.conn_or_acquire() as client, client.pipeline() as own:
                own.zrem(self.unacked_index_key, *tags).hdel(self.unacked_key, *tags).execute()
        except BaseException:
            with self._acked_lock:  # written at the next chance instead
                self._acked[:0] = tags
            raise

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        if self.batch is not None:
            self.batch.execute()  # a requeue reads the message's unacknowledged copy back
        super().reject(delivery_tag, requeue=requeue)


class Channel(kombu_redis.Channel):
    QoS = QoS
    _sync_client: Any = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:  # the event loop's client, made once per channel by kombu itself
            return super()._create_client(asynchronous=True)
        if self._sync_client is None:
            self._sync_client = super()._create_client()
        return self._sync_client

    def _brpop_start(self, timeout: Any = None) -> None:
        self.qos.write_acks()
        super()._brpop_start(timeout)

    def close(self) -> None:
        if not self.closed:
            with contextlib.suppress(*self.connection_errors):  # Redis gone: kombu restores them later
                self.qos.write_acks()
        super().close()

    def _brpop_read(self, **options: Any) -> bool:
        try:
            try:
                key_item = self.client.parse_response(self.client.connection, "BRPOP", **options)
            except self.connection_errors:
                self.client.connection.disconnect()  # the next turn reconnects
                raise
            if not key_item:
                raise Empty()
            key, first = key_item
            queue = bytes_to_str(key).rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(queue)
        finally:
            self._in_poll = None  # type: ignore[assignment]  # kombu's own reset, typed bool there
            self._flush_brpop_reauth()
        room = self.qos.can_consume_max_estimate()
        more = (MAX_BATCH if room is None else room) - 1
        with self.conn_or_acquire() as client:
            items = [first]
            if more > 0 and not self.global_keyprefix:
                items += client.rpop(key, more) or []
            self._deliver_batch(client, key, queue, items)
        return True

    def _deliver_batch(self, client: Any, key: bytes, queue: str, items: list[bytes]) -> None:
        delivered = 0
        with client.pipeline() as pipe:
            self.qos.batch = pipe
            try:
                for raw in items:
                    delivered += 1
                    self.connection._deliver(loads(bytes_to_str(raw)), queue)
            finally:
                self.qos.batch = None
                self.qos.write_acks(pipe)
                pipe.execute()
                rest = items[delivered:]
                if rest:  # a delivery raised: the messages not yet delivered go back, next in line
                    client.rpush(key, *reversed(rest))


class Transport(kombu_redis.Transport):
    Channel = Channel
