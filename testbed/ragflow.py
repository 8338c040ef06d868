"""RAGFlow's side of its task streams, written and read the way RAGFlow does it.

`queue_task` is `RedisDB.queue_product` (rag/utils/redis_conn.py): XADD with one field, `message`,
holding the task as JSON, to `te.{priority}.common` (common/settings.py `get_svr_queue_name`), after
the task rows are committed (api/db/services/task_service.py `queue_tasks`). `Executor` reads like
`task_executor.py`: the consumer group `rag_flow_svr_task_broker`, created from id 0 with MKSTREAM,
XREADGROUP one message at a time, XACK once the task is done.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import redis

GROUP = "rag_flow_svr_task_broker"


def stream_name(priority: int = 0) -> str:
    return f"te.{priority}.common"


def task(doc_id: str, **fields: Any) -> dict[str, Any]:
    """A task message as queue_tasks builds one (its digest aside): a page range of one document."""
    return {"id": uuid.uuid1().hex, "doc_id": doc_id, "progress": 0.0, "from_page": 0, "to_page": 100000000,
            "digest": uuid.uuid4().hex[:16], "priority": 0, **fields}  # fmt: skip


def queue_task(client: redis.Redis, message: dict[str, Any], *, priority: int = 0) -> str:
    """XADD the task to its stream as RAGFlow does; return the entry's id."""
    entry_id = client.xadd(stream_name(priority), {"message": json.dumps(message)})
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


class Executor:
    """One RAGFlow task executor's reading of a stream through the consumer group."""

    def __init__(self, client: redis.Redis, *, priority: int = 0, consumer: str = "task_executor_0") -> None:
        self.client, self.stream, self.consumer = client, stream_name(priority), consumer

    def join(self) -> None:
        """Create the group as RAGFlow does when it finds none (from id 0, making the stream if needed)."""
        try:
            self.client.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def take(self) -> tuple[str, dict[str, Any]] | None:
        """The next message delivered to this consumer (XREADGROUP '>' COUNT 1), not yet acknowledged."""
        reply: Any = self.client.xreadgroup(GROUP, self.consumer, {self.stream: ">"}, count=1, block=5)
        if not reply:
            return None
        entry_id, fields = reply[0][1][0]
        return entry_id.decode(), json.loads(fields[b"message"])

    def ack(self, entry_id: str) -> None:
        self.client.xack(self.stream, GROUP, entry_id)

    def group(self) -> dict[str, Any]:
        """The group as Redis reports it (XINFO GROUPS), with its pending entries (XPENDING) by consumer."""
        [info] = [g for g in self.client.xinfo_groups(self.stream) if g["name"] in (GROUP, GROUP.encode())]
        pending = self.client.xpending(self.stream, GROUP)
        return {**info, "pending_by_consumer": pending["consumers"], "pending_range": (pending["min"], pending["max"])}
