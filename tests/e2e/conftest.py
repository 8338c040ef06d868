"""cachetasks' worker and beat as processes, stopped after each test; their logs shown when it fails."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from testbed.processes import Processes, service_env


@pytest.fixture
def processes(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[[dict[str, str]], Processes]]:
    """Start worker and beat processes with given settings; all are killed after the test."""
    started: list[Processes] = []

    def make(settings: dict[str, str]) -> Processes:
        procs = Processes(service_env(settings), tmp_path / "logs")
        started.append(procs)
        return procs

    yield make
    for procs in started:
        procs.kill_all()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        for procs in started:
            print(procs.logs())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    report = yield
    setattr(item, "rep_" + report.when, report)
    return report
