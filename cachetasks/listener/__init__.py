"""The listener: RAGFlow announces every task it queues on a Redis stream; the task's file is claimed
and its copy enqueued at once, instead of at the next collect.

- `messages`  what a stream entry says: the document of its task, or why it is malformed
- `streams`   which streams, read from which id (kept in Redis), never through RAGFlow's consumer group
- `presence`  one listener per deployment holds a lease and reads; what each listener process does
- `loop`      a turn: keep the lease, read a batch, look its documents up, claim and enqueue, count

Collect stays the safety net: whatever the listener misses (it was down, Redis restarted, a message
came before its rows were visible) is caught at the next collect, through the same claims.
"""

from __future__ import annotations

from .loop import Handled, Listener, Outcome, off_reason
from .presence import Presence, Role, running

__all__ = ["Handled", "Listener", "Outcome", "Presence", "Role", "off_reason", "running"]
