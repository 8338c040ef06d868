"""Flower as an operator sees it: a real Flower on a real worker, driven through headless Chromium.

Needs Debian's `chromium` and the `playwright` package (never `playwright install`): without them the
tests skip on a laptop and fail in CI. Screenshots land in artifacts/ at the repo root.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import shutil
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa
from celery import Celery

from cachetasks.cache import Cache
from cachetasks.ops.demo import insert_document
from testbed.processes import CELERY, REPO, Processes
from testbed.servers import free_port, wait_until
from tests.conftest import IN_CI
from tests.support.e2e import put_local, start_service

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

Start = Callable[[dict[str, str]], Processes]
ARTIFACTS = REPO / "artifacts"
USER, PASSWORD = "operator", "flower-test-secret"
BUCKET, LOCATION = "kb-flower", "reports/q3 summary.pdf"
_SET_BY_TEST = {"--port", "--address", "--basic-auth"}  # options the test sets itself
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
def chromium() -> str:
    """The path of Debian's Chromium, once Playwright can drive it; a skip (a failure in CI) otherwise."""
    path = shutil.which("chromium") or ""
    problem = "" if path else "Chromium is not installed (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401 -- only checking that it is there
    except ImportError:
        problem = "playwright is not installed (pip install -r requirements-dev.txt)"
    if problem:
        if IN_CI:
            pytest.fail(problem)
        pytest.skip(problem)
    return path


@contextlib.contextmanager
def logged_in_page(chromium: str) -> Iterator[Page]:
    """A page of a fresh headless Chromium whose context answers Flower's basic-auth challenge."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(
                http_credentials={"username": USER, "password": PASSWORD},
                viewport={"width": 1600, "height": 900},
            )
            try:
                yield context.new_page()
            finally:
                context.close()
        finally:
            browser.close()


def start_flower(procs: Processes, *extra: str) -> str:
    """Flower with basic auth on a free loopback port, as the Procfile runs it; return its URL once it answers."""
    port = free_port()
    procs.start(
        "flower",
        [*CELERY, "flower", f"--port={port}", "--address=127.0.0.1", f"--basic-auth={USER}:{PASSWORD}", *extra],
    )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        with urllib.request.urlopen(url + "/healthcheck", timeout=2) as response:
            return bool(response.status == 200)

    wait_until(healthy, timeout=30, what="Flower's /healthcheck")
    return url


def flower_sees_collects(flower: str) -> bool:
    """Flower lists a `collect` task: the workers send task events, which Flower switched on itself."""
    request = urllib.request.Request(f"{flower}/api/tasks?taskname=cachetasks.collect&limit=1")
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=5) as response:
        return bool(json.loads(response.read()))


def cache_one_file(env: dict[str, str], engine: sa.Engine, cache: Cache, procs: Processes, flower: str) -> None:
    """Start worker and beat; once Flower has turned the workers' task events on (they start with them off),
    make one document ongoing, and return once its file is cached."""
    start_service(procs, cache.client)
    wait_until(lambda: flower_sees_collects(flower), timeout=20, interval=0.5, what="Flower to enable task events")
    put_local(env, BUCKET, LOCATION, b"%PDF-1.7 quarterly summary")
    with engine.begin() as conn:
        insert_document(conn, kb_id=BUCKET, location=LOCATION)
    wait_until(lambda: cache.client.exists(f"{BUCKET}/{LOCATION}"), timeout=10, what="the file cached")


def succeeded_copy_row(page: Page, flower: str) -> Locator:
    """The tasks page's row of a succeeded `cachetasks.cache_file`, reloading until Flower has seen it.

    The page lists tasks of that name (Flower's own link from a task name), so that the copy is not
    pushed off the first page by the `collect` that beat sends every second.
    """
    row = page.locator("#tasks-table tbody tr").filter(has_text="cachetasks.cache_file").filter(has_text="SUCCESS")

    def shown() -> bool:
        page.goto(f"{flower}/tasks?name=cachetasks.cache_file")
        page.wait_for_load_state("networkidle")
        return row.count() > 0

    wait_until(shown, timeout=20, interval=0.5, what="a succeeded cache_file row on /tasks")
    return row.first


def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    return path


def test_flower_behind_basic_auth_shows_a_succeeded_cache_file_with_its_arguments_in_a_browser(
    env: dict[str, str], sqlite_engine: sa.Engine, cache: Cache, processes: Start, chromium: str
) -> None:
    """A logged-in browser finds the succeeded copy on /tasks, with its bucket, location and runtime; no login: 401."""
    # Given Flower, then a worker and beat that cached one file
    procs = processes(env)
    flower = start_flower(procs)
    cache_one_file(env, sqlite_engine, cache, procs, flower)
    # When a client without credentials asks for the tasks page
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{flower}/tasks", timeout=5).close()
    refused.value.close()
    # Expect Flower to refuse it
    assert refused.value.code == 401
    # When a logged-in browser opens the tasks page
    with logged_in_page(chromium) as page:
        row = succeeded_copy_row(page, flower)
        tasks_png = screenshot(page, "flower-tasks.png")
        # Expect the row to lead to the task, whose page shows its arguments, state and runtime
        task_id = row.locator("a[href*='/task/']").first.get_attribute("title")
        assert task_id and re.fullmatch(r"[0-9a-f-]{36}", task_id), task_id
        page.goto(f"{flower}/task/{task_id}")
        details = page.locator("body").inner_text()
        task_png = screenshot(page, "flower-task.png")
    assert "cachetasks.cache_file" in details
    assert "SUCCESS" in details
    assert f"'{BUCKET}'" in details and f"'{LOCATION}'" in details, details
    assert re.search(r"(?i)runtime\s+[\d.]+", details), details
    # Expect real PNG screenshots of both pages
    for png in (tasks_png, task_png):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.stat().st_size > 10_000


def test_flower_tasks_page_as_the_procfile_runs_it_shows_each_copy_s_arguments_in_its_row(
    env: dict[str, str], sqlite_engine: sa.Engine, cache: Cache, processes: Start, chromium: str
) -> None:
    """On /tasks itself, the succeeded copy's row shows the bucket and location it copied."""
    # Given Flower started with the Procfile's options, and a cached file
    procs = processes(env)
    procfile_flower = next(line for line in (REPO / "Procfile").read_text().splitlines() if line.startswith("flower:"))
    extra = [a for a in re.findall(r"--[\w-]+(?:=\S+)?", procfile_flower) if a.split("=")[0] not in _SET_BY_TEST]
    flower = start_flower(procs, *extra)
    cache_one_file(env, sqlite_engine, cache, procs, flower)
    # When a logged-in browser opens the tasks page
    with logged_in_page(chromium) as page:
        text = succeeded_copy_row(page, flower).inner_text()
    # Expect the arguments in the row
    assert BUCKET in text and LOCATION in text, text


def task_events_seen(broker_url: str, seconds: float) -> set[str]:
    """The types of the events workers publish over `seconds`, as a monitor receives them."""
    seen: set[str] = set()
    monitor = Celery(broker=broker_url)
    deadline = time.monotonic() + seconds
    with monitor.connection() as conn:
        receiver = monitor.events.Receiver(conn, handlers={"*": lambda event: seen.add(event["type"])})
        with contextlib.suppress(socket.timeout):
            for _ in receiver.itercapture(limit=None, timeout=seconds, wakeup=False):
                if time.monotonic() > deadline:
                    break
    return seen


def test_workers_send_task_events_only_once_a_monitor_switches_them_on(
    env: dict[str, str], sqlite_engine: sa.Engine, cache: Cache, processes: Start
) -> None:
    """A worker running a collect every second sends heartbeats but no task events, until `enable_events`."""
    # Given a worker and beat, collects running
    procs = processes(env)
    start_service(procs, cache.client)
    # When a monitor listens without switching task events on
    before = task_events_seen(env["CELERY_BROKER_URL"], 4)
    # Expect the worker's heartbeats and no task event
    assert "worker-heartbeat" in before
    assert not {kind for kind in before if kind.startswith("task-")}, before
    # When it switches them on, as Flower does at start
    Celery(broker=env["CELERY_BROKER_URL"]).control.enable_events()
    after = task_events_seen(env["CELERY_BROKER_URL"], 4)
    # Expect each collect's events
    assert {"task-received", "task-started", "task-succeeded"} <= after, after
