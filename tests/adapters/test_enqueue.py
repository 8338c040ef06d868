"""Copies published in bulk are the messages `apply_async` would publish, with ids and arguments of their own."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from typing import Any

from cachetasks.settings import FILES_QUEUE
from testbed.processes import REPO, service_env
from testbed.servers import RedisServer

PUBLISH = """
from cachetasks.ref import FileRef
from cachetasks.celery.tasks import cache_file, enqueue_copies
cache_file.apply_async(("kb0", "by apply_async.pdf"))
enqueue_copies([FileRef("kb1", "a.pdf"), FileRef("kb2", "dir/ü b.pdf")])
"""


def _messages(redis_server: RedisServer) -> list[dict[str, Any]]:
    raw = redis_server.client(0).lrange(FILES_QUEUE, 0, -1)
    return [json.loads(m) for m in reversed(raw)]  # LPUSHed: oldest last


def test_bulk_published_copies_match_apply_async_but_for_ids_and_arguments(
    env: dict[str, str], redis_server: RedisServer
) -> None:
    """Same task, headers, properties and body layout as apply_async; a fresh id and the ref's args each."""
    # Given / When one copy published by apply_async and two by enqueue_copies, in a process of their own
    subprocess.run([sys.executable, "-c", PUBLISH], env=service_env(env), cwd=REPO, check=True, timeout=60)
    # Expect three messages on the files queue
    reference, *bulk = _messages(redis_server)
    assert len(bulk) == 2
    ids = set()
    for message, args in zip(bulk, [["kb1", "a.pdf"], ["kb2", "dir/ü b.pdf"]], strict=True):
        headers, props = message["headers"], message["properties"]
        ids.add(headers["id"])
        # with their own id and arguments
        assert headers["id"] == headers["root_id"] == props["correlation_id"] != reference["headers"]["id"]
        assert headers["argsrepr"] == repr(tuple(args))
        body = json.loads(base64.b64decode(message["body"]))
        assert body == [args, {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
        # and all else as apply_async has it
        different = {"id", "root_id", "argsrepr"}
        assert {k: v for k, v in headers.items() if k not in different} == {
            k: v for k, v in reference["headers"].items() if k not in different
        }
        assert headers["task"] == "cachetasks.cache_file"
        own = {"correlation_id", "delivery_tag", "delivery_info"}
        assert {k: v for k, v in props.items() if k not in own} == {
            k: v for k, v in reference["properties"].items() if k not in own
        }
        assert props["delivery_info"]["routing_key"] == FILES_QUEUE
        assert {k: v for k, v in message.items() if k not in {"body", "headers", "properties"}} == {
            k: v for k, v in reference.items() if k not in {"body", "headers", "properties"}
        }
    assert len(ids) == 2
