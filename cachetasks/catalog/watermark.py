"""The documents of the tasks created or updated since the last look, each task read as new once.

RAGFlow stamps a task's create_time and update_time (indexed, in ms) in the application before
it commits the rows, so a task may become visible after a newer one was read. Each look reads
back `TASKS_OVERLAP_MS` before the newest stamp it has seen, and remembers the stamps it read
there, so that a late row is still found and a row read before is not reported again. Once this
clock is past that overlap, no row stamped before it can still be on its way: a burst of tasks
followed by silence is not read again and again.
"""

from __future__ import annotations

import time

import sqlalchemy as sa

from .queries import new_tasks_query, newest_task_query, run

# Longer than a commit takes after RAGFlow stamps its rows, even a bulk insert on a busy database;
# rows committed later still are found by the next full collect.
TASKS_OVERLAP_MS = 5000


class TaskWatermark:
    """Where the last look at the task table stopped."""

    def __init__(self) -> None:
        self._newest: int | None = None  # the newest stamp (ms) seen
        self._read: dict[str, int] = {}  # task id -> its stamp when read, for the rows inside the overlap

    def documents(self, engine: sa.Engine, *, now: float | None = None) -> set[str]:
        """The documents of the tasks created or updated since the previous look (the first one starts
        just before the newest task in the table)."""
        if self._newest is None:
            [(created, updated)] = run(engine, newest_task_query(), {}, width=2)
            self._newest = max(int(created or 0), int(updated or 0))
        newest = self._newest
        settled = int((time.time() if now is None else now) * 1000) - TASKS_OVERLAP_MS
        # The stamps are the application's, this clock is ours: never read less than what is newer than
        # the newest stamp seen, nor more than the overlap before it.
        floor = max(newest - TASKS_OVERLAP_MS, min(newest + 1, settled))
        docs: set[str] = set()
        for task, doc, created, updated in run(engine, new_tasks_query(floor), {}, width=4):
            stamp = max(int(created or 0), int(updated or 0))
            if self._read.get(str(task)) != stamp:
                self._read[str(task)] = stamp
                if doc is not None:
                    docs.add(str(doc))
            newest = max(newest, stamp)
        self._newest = newest
        if self._read:  # floors only rise: a row stamped below this one is never read again
            self._read = {task: stamp for task, stamp in self._read.items() if stamp >= floor}
        return docs
