"""The operator commands as an operator runs them: `python -m cachetasks ...` processes against real servers."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from cachetasks.cache import Cache, FileState
from cachetasks.ops.demo import insert_document
from cachetasks.ops.warm import warm_once
from cachetasks.ref import FileRef
from cachetasks.settings import COLLECT_QUEUE, FILES_QUEUE, Settings
from cachetasks.storage import LocalStorage
from testbed.processes import REPO, Processes, service_env
from testbed.servers import RedisServer, free_port, postgres_database, wait_until
from tests.support.e2e import local_root, put_local, start_service

Start = Callable[[dict[str, str]], Processes]
COMMANDS = ("initdb", "demo", "status", "check", "warm", "listen", "metrics")
TABLES = {"task", "document", "file", "file2document"}
DEPENDENCIES = ("broker", "cache", "database", "storage")


def cachetasks(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run `python -m cachetasks ARGS` from the repo root with only `env`'s settings."""
    return subprocess.run(
        [sys.executable, "-m", "cachetasks", *args],
        cwd=REPO,
        env=service_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def checks_by_name(env: dict[str, str]) -> tuple[int, dict[str, dict[str, Any]]]:
    """`check --json`: the exit code and each dependency's result by name."""
    done = cachetasks(env, "check", "--json")
    return done.returncode, {c["name"]: c for c in json.loads(done.stdout)}


def table_names(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def rows(text: str) -> dict[str, str]:
    """The `status` table as {row name: value}."""
    pairs = (re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in text.splitlines() if line.strip())
    return {pair[0]: pair[1] for pair in pairs if len(pair) == 2}


# -- initdb ------------------------------------------------------------------------------------


def test_initdb_creates_the_four_tables_in_a_fresh_sqlite_file_and_then_reports_they_exist(
    env: dict[str, str],
) -> None:
    """`initdb` creates task, document, file and file2document in the SQLite file; run again, it changes nothing."""
    # Given an empty data directory
    Path(env["CACHETASKS_DATA_DIR"]).mkdir(parents=True)
    # When initdb runs twice
    first, second = cachetasks(env, "initdb"), cachetasks(env, "initdb")
    # Expect the tables created once, and the second run to say so and succeed
    assert (first.returncode, second.returncode) == (0, 0), first.stderr + second.stderr
    assert set(first.stdout.removeprefix("created tables: ").strip().split(", ")) == TABLES
    assert second.stdout.strip() == "all tables already exist"
    assert table_names(f"sqlite:///{env['CACHETASKS_DATA_DIR']}/cachetasks.sqlite3") == TABLES


def test_initdb_creates_the_data_directory_of_the_default_sqlite_file(env: dict[str, str]) -> None:
    """On a fresh machine, where CACHETASKS_DATA_DIR does not exist yet, `initdb` creates it and the tables."""
    # Given a data directory that does not exist
    assert not Path(env["CACHETASKS_DATA_DIR"]).exists()
    # When initdb runs
    done = cachetasks(env, "initdb")
    # Expect the tables in a new SQLite file
    assert done.returncode == 0, done.stderr
    assert table_names(f"sqlite:///{env['CACHETASKS_DATA_DIR']}/cachetasks.sqlite3") == TABLES


def test_initdb_creates_the_four_tables_in_a_fresh_postgresql_database_and_is_idempotent(
    env: dict[str, str], pg_url: str
) -> None:
    """`initdb` builds RAGFlow's four tables in an empty PostgreSQL database; a second run leaves them as they are."""
    with postgres_database() as url:
        # Given an empty database of our own
        settings = {**env, "CACHETASKS_DATABASE_URL": url}
        # When initdb runs twice
        first, second = cachetasks(settings, "initdb"), cachetasks(settings, "initdb")
        # Expect
        assert (first.returncode, second.returncode) == (0, 0), first.stderr + second.stderr
        assert set(first.stdout.removeprefix("created tables: ").strip().split(", ")) == TABLES
        assert second.stdout.strip() == "all tables already exist"
        assert table_names(url) == TABLES


# -- status ------------------------------------------------------------------------------------


def test_status_reports_what_the_cache_holds_what_waits_and_the_queues(
    env: dict[str, str], sqlite_engine: sa.Engine, cache: Cache, redis_server: RedisServer
) -> None:
    """`status` and `status --json` count cached, skipped, uncached and in-flight files, bytes, queues and beat."""
    # Given a collect (run in this process, as `warm` does) that cached two ongoing files and found a third missing
    put_local(env, "kb1", "a.txt", b"a" * 100)
    put_local(env, "kb1", "b.txt", b"b" * 250)
    with sqlite_engine.begin() as conn:
        for name in ("a.txt", "b.txt", "gone.txt"):
            insert_document(conn, kb_id="kb1", location=name)
    settings = Settings.from_env(env)
    outcomes = warm_once(sqlite_engine, cache, LocalStorage(settings.storage_root), settings)
    assert (outcomes["cached"], outcomes["missing"]) == (2, 1)
    # Given then a document ongoing for 40 s, one being copied, and messages queued
    with sqlite_engine.begin() as conn:
        insert_document(conn, kb_id="kb1", location="late.txt", created_ms=int((time.time() - 40) * 1000))
        insert_document(conn, kb_id="kb1", location="busy.txt")
    assert cache.begin(FileRef("kb1", "busy.txt"), "another-copier", inflight_ttl=120).state is FileState.CLAIMED
    broker = redis_server.client(0)
    broker.delete(COLLECT_QUEUE, FILES_QUEUE)
    broker.rpush(FILES_QUEUE, "m1", "m2", "m3")
    broker.rpush(COLLECT_QUEUE, "c1", "c2")
    broker.close()
    # When an operator asks for the status, as JSON and as a table
    as_json, as_table = cachetasks(env, "status", "--json"), cachetasks(env, "status")
    # Expect the JSON to match the setup
    assert (as_json.returncode, as_table.returncode) == (0, 0), as_json.stderr + as_table.stderr
    report = json.loads(as_json.stdout)
    assert report["ongoing"] == 5
    assert report["states"] == {"cached": 2, "skipped:missing": 1, "uncached": 1, "in-flight": 1}
    assert report["held_bytes"] == 350
    assert report["oldest_uncached"] == "kb1/late.txt"
    assert 39 <= report["oldest_uncached_age"] <= 50
    assert report["queues"] == {COLLECT_QUEUE: 2, FILES_QUEUE: 3}
    assert 0 <= report["last_collect_age"] <= 30
    assert report["beat_recent"] is (report["last_collect_age"] <= 5)
    assert report["seconds"] < 2.0
    # Expect the table to say the same
    table = rows(as_table.stdout)
    assert table["ongoing files"] == "5"
    assert (table["cached"], table["in-flight"], table["uncached"], table["evicted"]) == ("2", "1", "1", "0")
    assert table["skipped (missing)"] == "1"
    assert table["bytes held"] == "350"
    assert re.fullmatch(r"kb1/late\.txt \((\d+(\.\d)?) s\)", table["oldest uncached"])
    assert (table[f"queue {COLLECT_QUEUE}"], table[f"queue {FILES_QUEUE}"]) == ("2", "3")
    assert re.fullmatch(r"[\d.]+ s ago \(beat (is firing|looks stopped)\)", table["last collect"])


def test_status_says_beat_never_ran_on_an_empty_service(env: dict[str, str], sqlite_engine: sa.Engine) -> None:
    """With no collect ever run, `status` reports nothing ongoing, empty queues and a beat that never fired."""
    # Given empty tables and an empty Redis
    # When
    done = cachetasks(env, "status", "--json")
    # Expect
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["ongoing"], report["states"], report["held_bytes"]) == (0, {}, 0)
    assert (report["oldest_uncached"], report["last_collect_age"], report["beat_recent"]) == (None, None, False)
    assert report["queues"] == {COLLECT_QUEUE: 0, FILES_QUEUE: 0}
    assert rows(cachetasks(env, "status").stdout)["last collect"] == "never (is beat running?)"


def test_status_reports_no_bytes_held_once_the_cached_files_have_expired(
    env: dict[str, str], sqlite_engine: sa.Engine, cache: Cache, processes: Start
) -> None:
    """With the service stopped, `status` counts the bytes of files still in Redis: none once their TTLs ran out."""
    # Given a service with a 2 s TTL that cached two files, then stopped
    procs = processes({**env, "CACHETASKS_TTL": "2"})
    start_service(procs, cache.client)
    put_local(env, "kb1", "a.txt", b"a" * 100)
    put_local(env, "kb1", "b.txt", b"b" * 250)
    with sqlite_engine.begin() as conn:
        for name in ("a.txt", "b.txt"):
            insert_document(conn, kb_id="kb1", location=name)
    wait_until(lambda: cache.client.exists("kb1/a.txt", "kb1/b.txt") == 2, timeout=5, what="two cached files")
    assert json.loads(cachetasks(env, "status", "--json").stdout)["held_bytes"] == 350
    procs.kill_all()
    # When their TTLs run out with no collect to notice
    wait_until(lambda: not cache.client.exists("kb1/a.txt", "kb1/b.txt"), timeout=5, what="the keys to expire")
    # Expect no bytes held, as JSON and in the table
    assert json.loads(cachetasks(env, "status", "--json").stdout)["held_bytes"] == 0
    assert rows(cachetasks(env, "status").stdout)["bytes held"] == "0"


@pytest.mark.parametrize("database", ["mysql", "postgresql"])
def test_status_and_check_count_addresses_byte_for_byte_on_ragflows_databases(
    database: str, env: dict[str, str], request: pytest.FixtureRequest
) -> None:
    """On MySQL (RAGFlow's collation, MySQL 8's ONLY_FULL_GROUP_BY) and PostgreSQL: 'Guide.pdf' and 'guide.pdf'
    are two ongoing files for `status` and `check`, and `status` answers instead of failing."""
    # Given three ongoing documents, two of whose locations differ only in case
    prefix = "pg" if database == "postgresql" else "mysql"
    engine: sa.Engine = request.getfixturevalue(f"{prefix}_engine")
    settings = {**env, "CACHETASKS_DATABASE_URL": request.getfixturevalue(f"{prefix}_url")}
    with engine.begin() as conn:
        for name in ("Guide.pdf", "guide.pdf", "other.pdf"):
            insert_document(conn, kb_id="kb1", location=name, created_ms=int((time.time() - 30) * 1000))
    local_root(env).mkdir(parents=True)
    # When
    status, check = cachetasks(settings, "status", "--json"), cachetasks(settings, "check", "--json")
    # Expect
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert (report["ongoing"], report["states"]) == (3, {"uncached": 3})
    assert report["oldest_uncached"] in ("kb1/Guide.pdf", "kb1/guide.pdf", "kb1/other.pdf")
    assert check.returncode == 0, check.stdout + check.stderr
    database_check = {c["name"]: c for c in json.loads(check.stdout)}["database"]
    assert database_check["detail"].endswith(": 3 ongoing files")


@pytest.mark.slow
def test_status_reports_100k_ongoing_pairs_on_postgresql_with_their_states_and_the_oldest_uncached(
    env: dict[str, str], pg_engine: sa.Engine, pg_url: str, cache: Cache
) -> None:
    """With 100,000 ongoing files on PostgreSQL, half of them cached, `status` counts each state and names the
    oldest uncached file. (How long it takes is measured by bench/s11_status.py, not asserted here.)"""
    # Given 100,000 ongoing documents, document g first seen g ms ago, and every even one cached
    count, now_ms = 100_000, int(time.time() * 1000)
    with pg_engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO document (id, kb_id, parser_id, parser_config, source_type, type, created_by,"
                " location, suffix, run, status, create_time)"
                " SELECT 'd' || g, 'kbperf', 'naive', '{}', 'local', 'pdf', '', 'file-' || g || '.pdf', 'pdf',"
                " '1', '1', :now FROM generate_series(1, :count) AS g"
            ),
            {"now": now_ms, "count": count},
        )
        conn.execute(
            sa.text(
                "INSERT INTO task (id, doc_id, task_type, progress, create_time)"
                " SELECT 't' || g, 'd' || g, '', 0.2, :now - g FROM generate_series(1, :count) AS g"
            ),
            {"now": now_ms, "count": count},
        )
        conn.execute(sa.text("ANALYZE task, document, file, file2document"))
    with cache.client.pipeline(transaction=False) as pipe:
        for g in range(2, count + 1, 2):
            pipe.set(f"kbperf/file-{g}.pdf", b"x", ex=600)
        pipe.execute()
    # When status runs
    started = time.perf_counter()
    done = cachetasks({**env, "CACHETASKS_DATABASE_URL": pg_url}, "status", "--json")
    wall = time.perf_counter() - started
    # Expect the right counts and the oldest uncached file
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["ongoing"] == count
    assert report["states"] == {"cached": count // 2, "uncached": count // 2}
    assert report["oldest_uncached"] == f"kbperf/file-{count - 1}.pdf"
    print(f"status gathered its report in {report['seconds']} s (the process {wall:.2f} s)")


# -- check -------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite+local", "postgresql+s3"])
def test_check_reports_every_dependency_ok_and_exits_0_when_all_answer(
    backend: str, request: pytest.FixtureRequest, env: dict[str, str]
) -> None:
    """With broker, cache, database and storage all reachable, `check` prints four OK lines and exits 0."""
    # Given working dependencies
    if backend == "sqlite+local":
        request.getfixturevalue("sqlite_engine")
        local_root(env).mkdir(parents=True)
        settings = env
    else:
        request.getfixturevalue("pg_engine")
        settings = {**request.getfixturevalue("s3_env"), "CACHETASKS_DATABASE_URL": request.getfixturevalue("pg_url")}
    # When
    done = cachetasks(settings, "check")
    code, checks = checks_by_name(settings)
    # Expect one OK line per dependency, and the same in JSON
    assert done.returncode == 0, done.stdout + done.stderr
    lines, _, sources = done.stdout.partition("\n\n")
    assert [line.split()[:2] for line in lines.splitlines()] == [[name, "OK"] for name in DEPENDENCIES]
    assert f"CACHETASKS_DATA_DIR={env['CACHETASKS_DATA_DIR']}  [environment]" in sources
    assert code == 0
    assert {name: c["ok"] for name, c in checks.items()} == dict.fromkeys(
        ("broker", "cache", "database", "storage"), True
    )
    assert all(isinstance(c["detail"], str) and c["detail"] for c in checks.values())


@pytest.fixture
def working(env: dict[str, str], sqlite_engine: sa.Engine) -> dict[str, str]:
    """Settings under which every check passes: private Redis, SQLite with the tables, a local folder."""
    local_root(env).mkdir(parents=True)
    return env


def test_check_names_an_unreachable_cache_redis_and_exits_1(working: dict[str, str]) -> None:
    """With nothing listening at the cache's Redis address, `check` fails the cache, says why, and exits 1."""
    # Given a cache URL whose port is closed
    settings = {**working, "CACHETASKS_REDIS_URL": f"redis://127.0.0.1:{free_port()}/1"}
    # When
    code, checks = checks_by_name(settings)
    # Expect only the cache to fail, as unreachable
    assert code == 1
    assert {name: c["ok"] for name, c in checks.items()} == {
        "broker": True,
        "cache": False,
        "database": True,
        "storage": True,
    }
    assert re.search(r"ConnectionError.*refused", checks["cache"]["detail"]), checks["cache"]


def test_check_names_a_wrong_redis_password_and_never_prints_it(
    working: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Against a Redis that requires a password, a wrong one fails the check as bad credentials, without echoing it."""
    # Given a private redis-server with a password, and settings with the wrong one
    server = RedisServer(tmp_path_factory.mktemp("redis-auth"), args=("--requirepass", "right-secret")).start()
    try:
        settings = {**working, "CACHETASKS_REDIS_URL": server.url(1, password="wrong-secret")}
        # When
        done = cachetasks(settings, "check")
        code, checks = checks_by_name(settings)
    finally:
        server.stop()
    # Expect the cache check failed for authentication, and the password nowhere in the output
    assert (done.returncode, code) == (1, 1)
    assert not checks["cache"]["ok"]
    assert re.search(r"AuthenticationError|WRONGPASS|invalid username-password", checks["cache"]["detail"])
    assert re.search(r"^cache\s+FAILED\s+\S", done.stdout, re.MULTILINE), done.stdout
    assert "wrong-secret" not in done.stdout + done.stderr


def test_check_never_prints_a_password_given_as_a_query_parameter(
    working: dict[str, str], pg_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """`?password=` in the cache's and the database's URLs (as redis-py and libpq take it): checked, never shown."""
    # Given a private redis-server with a password, and both URLs carrying theirs as a query parameter
    server = RedisServer(tmp_path_factory.mktemp("redis-auth"), args=("--requirepass", "query-secret")).start()
    try:
        settings = {
            **working,
            "CACHETASKS_REDIS_URL": server.url(1) + "?password=query-secret",
            "CACHETASKS_DATABASE_URL": pg_url + "?password=db-query-secret",
        }
        # When
        done = cachetasks(settings, "check")
        _, checks = checks_by_name(settings)
    finally:
        server.stop()
    # Expect the cache reached with its password, and neither password in the output
    assert checks["cache"]["ok"], checks["cache"]
    assert "password=***" in checks["cache"]["detail"]
    assert "password=***" in checks["database"]["detail"], checks["database"]
    assert "query-secret" not in done.stdout + done.stderr


def test_check_names_a_missing_s3_bucket_and_exits_1(working: dict[str, str], s3_env: dict[str, str]) -> None:
    """In single-bucket mode, a bucket the S3 server does not have fails the storage check, naming the bucket."""
    # Given a fixed bucket that does not exist on a working S3 server
    settings = {**s3_env, "CACHETASKS_S3_BUCKET": "absent-bucket"}
    # When
    code, checks = checks_by_name(settings)
    # Expect only storage to fail, naming the bucket and the server's answer
    assert code == 1
    assert [name for name, c in checks.items() if not c["ok"]] == ["storage"]
    assert "absent-bucket" in checks["storage"]["detail"]
    assert re.search(r"404|NoSuchBucket", checks["storage"]["detail"]), checks["storage"]


def test_check_says_in_words_that_a_missing_s3_bucket_does_not_exist(
    working: dict[str, str], s3_env: dict[str, str]
) -> None:
    """The storage check's reason for a missing bucket reads as one (not a bare HTTP status after a stray slash)."""
    # Given a fixed bucket that does not exist
    settings = {**s3_env, "CACHETASKS_S3_BUCKET": "absent-bucket"}
    # When
    _, checks = checks_by_name(settings)
    # Expect
    detail = checks["storage"]["detail"]
    assert re.search(r"no such bucket|NoSuchBucket|does not exist|not found|missing", detail, re.IGNORECASE), detail
    assert "absent-bucket/" not in detail


def test_check_names_an_unreachable_database_and_exits_1(working: dict[str, str]) -> None:
    """With nothing listening at the database's address, `check` fails the database, says why, and exits 1."""
    # Given a PostgreSQL URL whose port is closed
    settings = {**working, "CACHETASKS_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/ragflow"}
    # When
    started = time.monotonic()
    code, checks = checks_by_name(settings)
    # Expect only the database to fail, promptly, as unreachable
    assert code == 1
    assert [name for name, c in checks.items() if not c["ok"]] == ["database"]
    assert re.search(r"refused|could not connect", checks["database"]["detail"]), checks["database"]
    assert time.monotonic() - started < 15


def test_check_json_is_a_list_of_name_ok_detail_objects(working: dict[str, str]) -> None:
    """`check --json` prints one JSON array with a name, an ok flag and a detail for each dependency."""
    # Given working settings except the broker
    settings = {**working, "CELERY_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0"}
    # When
    done = cachetasks(settings, "check", "--json")
    # Expect
    assert done.returncode == 1
    checks = json.loads(done.stdout)
    assert [c["name"] for c in checks] == list(DEPENDENCIES)
    assert all(set(c) == {"name", "ok", "detail"} and isinstance(c["ok"], bool) for c in checks)
    assert [c["ok"] for c in checks] == [False, True, True, True]


@pytest.mark.parametrize(
    ("command", "setting"),
    [
        pytest.param(("status",), "CACHETASKS_DATABASE_URL", id="status-database-down"),
        pytest.param(
            ("status",),
            "CACHETASKS_REDIS_URL",
            id="status-redis-down",
        ),
        pytest.param(
            ("warm", "--once"),
            "CACHETASKS_REDIS_URL",
            id="warm-redis-down",
        ),
        pytest.param(
            ("initdb",),
            "CACHETASKS_DATABASE_URL",
            id="initdb-database-down",
        ),
    ],
)
def test_a_command_whose_dependency_is_down_exits_1_with_one_line_saying_why(
    command: tuple[str, ...], setting: str, working: dict[str, str]
) -> None:
    """A command that cannot reach Redis or the database prints one `cachetasks:` line (no traceback) and exits 1."""
    # Given one dependency with nothing listening at its address
    port = free_port()
    url = f"redis://127.0.0.1:{port}/1" if setting == "CACHETASKS_REDIS_URL" else f"postgresql://u@127.0.0.1:{port}/x"
    # When
    done = cachetasks({**working, setting: url}, *command)
    # Expect
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cachetasks: "), done.stderr
    assert re.search(r"refused|could not connect", lines[0]), lines[0]


# -- warm --------------------------------------------------------------------------------------


def test_warm_once_caches_every_ongoing_file_without_a_broker_or_a_worker(
    env: dict[str, str], sqlite_engine: sa.Engine, cache: Cache
) -> None:
    """`warm --once` copies every ongoing file into Redis in its own process, with the broker down, and exits 0."""
    # Given three ongoing files in storage, one ongoing file missing, and no broker listening
    files = {f"doc-{i}.txt": f"contents {i}".encode() * (i + 1) for i in range(3)}
    with sqlite_engine.begin() as conn:
        for name, data in files.items():
            put_local(env, "kb1", name, data)
            insert_document(conn, kb_id="kb1", location=name)
        insert_document(conn, kb_id="kb1", location="gone.txt")
    settings = {**env, "CELERY_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0"}
    # When warm runs once, then again
    first = cachetasks(settings, "warm", "--once")
    second = cachetasks(settings, "warm", "--once", "--quiet")
    # Expect every file cached byte for byte, and each run's outcome counts printed
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "3 cached, 1 missing"
    assert {name: cache.client.get(f"kb1/{name}") for name in files} == files
    assert cache.client.exists("kb1/gone.txt") == 0
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "3 already-cached"


def test_warm_once_with_nothing_ongoing_says_so(env: dict[str, str], sqlite_engine: sa.Engine) -> None:
    """`warm --once` on an empty catalog prints that nothing is ongoing and exits 0."""
    # Given empty tables
    # When
    done = cachetasks(env, "warm", "--once")
    # Expect
    assert (done.returncode, done.stdout.strip()) == (0, "nothing ongoing"), done.stderr


# -- help, usage, configuration ----------------------------------------------------------------


@pytest.fixture(scope="module")
def top_help() -> str:
    """The output of `python -m cachetasks --help` (it reads no setting)."""
    done = cachetasks({}, "--help")
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_help_lists_every_command_with_a_summary(top_help: str) -> None:
    """`--help` exits 0 and lists each command with a one-line summary."""
    # Given the top-level help
    # Expect every command in it, each followed by a summary
    for command in COMMANDS:
        assert re.search(rf"^\s+{command}\s+\w", top_help, re.MULTILINE), f"{command} missing from:\n{top_help}"


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_has_help_with_its_usage_and_options(command: str, env: dict[str, str]) -> None:
    """`COMMAND --help` exits 0 and shows the command's usage line and options."""
    # When
    done = cachetasks(env, command, "--help")
    # Expect
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: python -m cachetasks {command} [-h]")
    assert "options:" in done.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_help_says_what_the_command_does(command: str, env: dict[str, str], top_help: str) -> None:
    """`COMMAND --help` repeats the one-line summary that the top-level help gives for the command."""
    # Given the summary the top-level help gives
    summary = re.search(rf"^\s+{command}\s+(\w[^\n]*)", top_help, re.MULTILINE)
    assert summary is not None
    # When
    done = cachetasks(env, command, "--help")
    # Expect its first words in the command's own help, above the options
    words = summary.group(1).split()[:3]
    assert re.search(r"\s+".join(map(re.escape, words)), done.stdout.split("options:")[0], re.I), done.stdout


def test_no_command_is_a_usage_error(env: dict[str, str]) -> None:
    """Run without a command, the CLI prints its usage on stderr and exits 2."""
    # When
    done = cachetasks(env)
    # Expect
    assert done.returncode == 2
    assert done.stderr.startswith("usage: python -m cachetasks")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CACHETASKS_TTL", "soon"),
        ("CACHETASKS_STORAGE", "ftp"),
        ("CELERY_BROKER_URL", "http://admin:hunter2@127.0.0.1:6379/0"),
        ("CACHETASKS_CONCURRENCY", "0"),
    ],
)
def test_a_bad_setting_exits_2_with_one_line_naming_the_variable(name: str, value: str, env: dict[str, str]) -> None:
    """Every command refuses a bad setting with exit code 2 and one line naming the variable, never its secret."""
    # Given one bad setting
    settings = {**env, name: value}
    # When
    done = cachetasks(settings, "status")
    # Expect
    assert done.returncode == 2
    assert name in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "hunter2" not in done.stderr + done.stdout
