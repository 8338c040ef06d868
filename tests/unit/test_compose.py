"""The deployment files agree with each other and with the settings the service reads.

No Docker engine is needed: docker-compose.yml is read as YAML, its `${...}` references are
expanded the way compose expands them, and the Procfile's lines are split like a shell would.
"""

from __future__ import annotations

import functools
import re
import shlex
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from cachetasks.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
PROCESSES = ("worker", "collector", "beat", "listener", "flower")
# Options that rightly differ between a process on a host and one in a container.
DEPLOYMENT_OPTIONS = ("--address", "--port", "--basic-auth")
REQUIRED_SECRETS = {"FLOWER_BASIC_AUTH", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD", "POSTGRES_PASSWORD"}
GIVEN_SECRETS = dict.fromkeys(REQUIRED_SECRETS, "secret")
# compose's forms: $$, ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error},
# ${NAME:+alternative}, ${NAME+alternative}; a default or an alternative may hold references itself.
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
OPERATORS = (":-", ":?", ":+", "-", "?", "+")
# What the service reads besides settings.py: RAGFlow's own selectors, read with RAGFlow's file.
RAGFLOW_SELECTORS = set(re.findall(r'env\.get\("([A-Z_]+)"\)', (ROOT / "cachetasks" / "ragflow_conf.py").read_text()))


class MissingVariable(Exception):
    """A `${NAME:?...}` reference whose variable is unset or empty."""


@functools.cache
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


RESPAWN = "python -m cachetasks.ops.respawn "  # the Procfile's wrapper: a process that exits is started again


def procfile_lines(name: str = "Procfile") -> dict[str, str]:
    """Each Procfile line's command as written, wrapper included."""
    lines = (ROOT / name).read_text().splitlines()
    return {k: v.strip() for k, v in (line.split(":", 1) for line in lines if re.match(r"^[A-Za-z0-9_-]+:", line))}


def procfile(name: str = "Procfile") -> dict[str, str]:
    """Each Procfile line's command, without the wrapper."""
    return {k: v.removeprefix(RESPAWN) for k, v in procfile_lines(name).items()}


def settings_variables() -> set[str]:
    """Every variable name cachetasks/settings.py reads, taken from its source."""
    source = (ROOT / "cachetasks" / "settings.py").read_text()
    return set(re.findall(r'"((?:CACHETASKS|CELERY|AWS|RAGFLOW)_[A-Z0-9_]+)"', source))


def parse(text: str) -> list[str | tuple[str, str, list[Any]]]:
    """`text` as literal pieces and references (name, operator, argument parsed the same way)."""
    pieces, _ = _parse(text, 0, nested=False)
    return pieces


def _parse(text: str, i: int, *, nested: bool) -> tuple[list[str | tuple[str, str, list[Any]]], int]:
    pieces: list[str | tuple[str, str, list[Any]]] = []
    while i < len(text):
        if nested and text[i] == "}":
            return pieces, i
        if text.startswith("$$", i):
            pieces.append("$")
            i += 2
        elif text.startswith("${", i):
            name = NAME.match(text, i + 2)
            assert name, f"a reference without a name at {text[i:]!r}"
            i = name.end()
            op = next((o for o in OPERATORS if text.startswith(o, i)), "")
            argument, i = _parse(text, i + len(op), nested=True) if op else ([], i)
            assert text[i] == "}", f"an unclosed reference in {text!r}"
            pieces.append((name[0], op, argument))
            i += 1
        else:
            pieces.append(text[i])
            i += 1
    assert not nested, f"an unclosed reference in {text!r}"
    return pieces, i


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Expand `text` as docker compose does with the variables in `env`."""
    return _expand(parse(text), env)


def _expand(pieces: list[str | tuple[str, str, list[Any]]], env: Mapping[str, str]) -> str:
    out = []
    for piece in pieces:
        if isinstance(piece, str):
            out.append(piece)
            continue
        name, op, argument = piece
        value = env.get(name)
        missing = value is None or (op.startswith(":") and value == "")
        if op in ("-", ":-"):
            out.append(_expand(argument, env) if missing else str(value))
        elif op in ("?", ":?"):
            if missing:
                raise MissingVariable(f"{name}: {_expand(argument, env)}")
            out.append(str(value))
        elif op in ("+", ":+"):
            out.append("" if missing else _expand(argument, env))
        else:
            out.append(value or "")
    return "".join(out)


def references(text: str) -> list[tuple[str, str]]:
    """Every reference in `text`, nested ones too, as (name, operator)."""
    found: list[tuple[str, str]] = []

    def walk(pieces: list[str | tuple[str, str, list[Any]]]) -> None:
        for piece in pieces:
            if not isinstance(piece, str):
                found.append((piece[0], piece[1]))
                walk(piece[2])

    walk(parse(text))
    return found


def required_variables(text: str) -> set[str]:
    return {name for name, op in references(text) if op in ("?", ":?")}


def command(service: dict[str, Any], key: str = "command") -> list[str]:
    """A service's command as compose runs it: references expanded first, then a string split into words."""
    value = service[key]
    if isinstance(value, list):
        return [interpolate(str(word), GIVEN_SECRETS) for word in value]
    return shlex.split(interpolate(value, GIVEN_SECRETS))


def without_deployment_options(tokens: list[str]) -> list[str]:
    return [t for t in tokens if not t.startswith(DEPLOYMENT_OPTIONS)]


def option(tokens: list[str], *names: str) -> str | None:
    for i, token in enumerate(tokens):
        for name in names:
            if token == name:
                return tokens[i + 1]
            if token.startswith(name + "="):
                return token.split("=", 1)[1]
    return None


def app_environment() -> dict[str, str]:
    env: dict[str, str] = services()["worker"]["environment"]
    return env


def test_every_long_running_service_has_a_healthcheck() -> None:
    """Every service has a healthcheck except minio-init, a one-shot the app services wait for."""
    unchecked = {name for name, service in services().items() if "healthcheck" not in service}

    assert unchecked == {"minio-init"}
    assert services()["worker"]["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"


@pytest.mark.parametrize("name", ["worker", "collector", "beat"])
def test_celery_healthcheck_pings_the_node_its_service_runs(name: str) -> None:
    """Each Celery service's healthcheck pings its own node name and fails when nothing replies."""
    tokens = command(services()[name])
    node = option(tokens, "-n", "--hostname") or "celerybeat@%h"
    check = command(services()[name]["healthcheck"], "test")

    assert check[:5] == ["celery", "-A", "cachetasks", "inspect", "ping"]
    assert option(check, "-d", "--destination") == node.replace("%h", "$HOSTNAME")


@pytest.mark.parametrize("name", PROCESSES)
def test_compose_runs_the_procfile_process(name: str) -> None:
    """Compose and the Procfile run each process with the same sub-command, queue, node name and pool."""
    from_procfile = shlex.split(procfile()[name])
    from_compose = command(services()[name])

    assert without_deployment_options(from_compose) == without_deployment_options(from_procfile)


def test_files_and_collect_queues_have_their_own_workers() -> None:
    """The files worker uses celeryconfig's pool; the collector consumes only its queue with a solo pool."""
    worker, collector = (shlex.split(procfile()[name]) for name in ("worker", "collector"))

    assert (option(worker, "-Q", "--queues"), option(worker, "-P", "--pool")) == ("cachetasks.files", None)
    assert (option(collector, "-Q", "--queues"), option(collector, "-P", "--pool")) == ("cachetasks.collect", "solo")


def test_compose_runs_as_many_files_workers_as_the_procfile_each_with_a_node_name_of_its_own() -> None:
    """The Procfile's files workers differ only in their node names; compose runs as many replicas."""
    files = {name: shlex.split(line) for name, line in procfile().items() if "cachetasks.files" in line.split()}
    nodes = [option(tokens, "-n", "--hostname") for tokens in files.values()]
    without_nodes = {" ".join(t for t in tokens if t not in nodes) for tokens in files.values()}

    assert sorted(files) == ["worker", "worker2"]
    assert len(set(nodes)) == len(nodes) and len(without_nodes) == 1
    assert services()["worker"]["deploy"]["replicas"] == len(files)


def test_exactly_one_beat_and_no_beat_inside_a_worker() -> None:
    """One beat process in each file, and no worker embeds a scheduler with -B."""
    everything = [*procfile().values(), *(" ".join(command(s)) for s in services().values() if "command" in s)]

    assert [name for name in procfile() if "beat" in procfile()[name].split()] == ["beat"]
    assert "deploy" not in services()["beat"]
    assert not [line for line in everything if re.search(r"\s(-B|--beat)(\s|$)", line)]


@pytest.mark.parametrize("name", ["Procfile", "Procfile.dev"])
def test_every_process_is_started_again_when_it_exits_under_honcho_and_compose(name: str) -> None:
    """honcho stops everything when one process exits: each line is wrapped; compose restarts its services."""
    assert [role for role, line in procfile_lines(name).items() if not line.startswith(RESPAWN)] == []
    assert {services()[role].get("restart") for role in PROCESSES} == {"unless-stopped"}


def test_exactly_one_listener_whose_healthcheck_asks_after_its_own_node() -> None:
    """One listener in the Procfile and in compose (its lease makes any other a standby); compose's healthcheck
    pings the node the listener runs as, by default the container's host name."""
    listeners = [name for name, line in procfile().items() if shlex.split(line)[-1:] == ["listen"]]
    tokens = command(services()["listener"])
    check = command(services()["listener"]["healthcheck"], "test")

    assert listeners == ["listener"]
    assert "deploy" not in services()["listener"]
    assert check == [*tokens, "--ping"]
    assert option(tokens, "-n", "--node") is None


def test_dev_procfile_runs_the_production_processes_plus_demo() -> None:
    """Procfile.dev (make run) has the production processes unchanged, plus the demo feeder."""
    dev = procfile("Procfile.dev")

    assert {name: dev[name] for name in procfile()} == procfile()
    assert set(dev) - set(procfile()) == {"demo"}


def test_compose_names_only_variables_the_settings_read() -> None:
    """Every CACHETASKS_* or CELERY_* variable compose sets is one cachetasks/settings.py reads."""
    known = settings_variables()
    named = {
        variable
        for service in services().values()
        for variable in service.get("environment", {})
        if variable.startswith(("CACHETASKS_", "CELERY_"))
    }

    assert named
    assert named - known == set()


def test_the_app_environment_names_only_what_the_service_reads() -> None:
    """Every variable compose gives the cachetasks processes is read by settings.py or by ragflow_conf.py."""
    # Expect
    assert set(app_environment()) - settings_variables() - RAGFLOW_SELECTORS == set()


def test_env_example_names_only_variables_the_service_or_compose_reads() -> None:
    """Each NAME= line of .env.example is a setting, one of RAGFlow's selectors, or a variable compose refers to."""
    # Given
    example = (ROOT / ".env.example").read_text()
    compose_names = {name for name, _ in references((ROOT / "docker-compose.yml").read_text())}
    # When
    named = set(re.findall(r"^(?:# )?([A-Z][A-Z0-9_]*)=", example, re.MULTILINE))
    # Expect
    assert named - settings_variables() - RAGFLOW_SELECTORS - compose_names == set()


def test_compose_app_environment_passes_settings_validation_with_s3() -> None:
    """With its required secrets given, the app environment parses into S3 settings for MinIO and PostgreSQL."""
    env = {name: interpolate(str(value), GIVEN_SECRETS) for name, value in app_environment().items()}

    parsed = Settings.from_env(env)

    assert (parsed.storage, parsed.s3_endpoint_url) == ("s3", "http://minio:9000")
    assert parsed.database_url.startswith("postgresql://")
    assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == ("secret", "secret")
    assert parsed.broker_url != parsed.redis_url
    assert parsed.ragflow_conf is None


RAGFLOW_CONF = """
mysql:
  name: rag_flow
  user: root
  password: infini_rag_flow
  host: mysql
  port: 3306
minio:
  user: rag_flow
  password: infini_rag_flow
  host: minio.ragflow:9000
redis:
  db: 1
  password: infini_rag_flow
  host: redis.ragflow:6379
"""
# What .env empties so that RAGFlow's file gives it instead of compose's own servers.
LEFT_TO_RAGFLOW = (
    "CELERY_BROKER_URL",
    "CACHETASKS_REDIS_URL",
    "CACHETASKS_DATABASE_URL",
    "CACHETASKS_STORAGE",
    "CACHETASKS_S3_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
)


def test_beside_ragflow_the_mounted_file_gives_what_env_leaves_empty(tmp_path: Path) -> None:
    """RAGFLOW_SERVICE_CONF is mounted where CACHETASKS_RAGFLOW_CONF points; emptied servers come from that file."""
    # Given RAGFlow's file on the host, named in .env, and compose's own servers emptied there
    conf = tmp_path / "service_conf.yaml"
    conf.write_text(RAGFLOW_CONF)
    dotenv = {**GIVEN_SECRETS, "RAGFLOW_SERVICE_CONF": str(conf), **dict.fromkeys(LEFT_TO_RAGFLOW, "")}
    env = {name: interpolate(str(value), dotenv) for name, value in app_environment().items()}
    host, target, mode = interpolate(services()["worker"]["volumes"][0], dotenv).split(":")
    # When the container reads the file where it is mounted
    parsed = Settings.from_env({**env, "CACHETASKS_RAGFLOW_CONF": str(conf)})
    # Expect
    assert (host, target, mode) == (str(conf), env["CACHETASKS_RAGFLOW_CONF"], "ro")
    assert parsed.database_url == "mysql+pymysql://root:infini_rag_flow@mysql:3306/rag_flow"
    assert (parsed.broker_url, parsed.redis_url) == (
        "redis://:infini_rag_flow@redis.ragflow:6379/0",
        "redis://:infini_rag_flow@redis.ragflow:6379/1",
    )
    assert (parsed.storage, parsed.s3_endpoint_url, parsed.s3_access_key_id) == (
        "s3",
        "http://minio.ragflow:9000",
        "rag_flow",
    )
    assert {s.variable for s in parsed.sources if s.origin.startswith("RAGFlow")} >= set(LEFT_TO_RAGFLOW)


def test_without_ragflows_file_nothing_is_mounted_and_no_file_is_read() -> None:
    """Unset RAGFLOW_SERVICE_CONF mounts /dev/null and leaves CACHETASKS_RAGFLOW_CONF empty: no file is read."""
    # When
    volume = interpolate(services()["worker"]["volumes"][0], GIVEN_SECRETS)
    conf = interpolate(app_environment()["CACHETASKS_RAGFLOW_CONF"], GIVEN_SECRETS)
    # Expect
    assert volume.startswith("/dev/null:") and conf == ""


def test_compose_refuses_to_start_without_s3_credentials() -> None:
    """The S3 credentials are required references, so a missing one stops compose instead of failing later."""
    env = app_environment()

    assert required_variables(env["AWS_ACCESS_KEY_ID"]) == {"MINIO_ROOT_USER"}
    assert required_variables(env["AWS_SECRET_ACCESS_KEY"]) == {"MINIO_ROOT_PASSWORD"}
    with pytest.raises(MissingVariable, match="MINIO_ROOT_USER"):
        interpolate(env["AWS_ACCESS_KEY_ID"], {"MINIO_ROOT_USER": ""})


def test_compose_requires_exactly_the_secrets_env_example_lists() -> None:
    """The variables compose requires are the four secrets, each with an empty line in .env.example."""
    text = (ROOT / "docker-compose.yml").read_text()
    example = (ROOT / ".env.example").read_text()

    assert required_variables(text) == REQUIRED_SECRETS
    for name in REQUIRED_SECRETS:
        assert re.search(rf"^{name}=$", example, re.MULTILINE), name


def test_env_example_and_readme_document_every_setting() -> None:
    """Every variable settings.py reads appears in .env.example and in the README."""
    example = (ROOT / ".env.example").read_text()
    readme = (ROOT / "README.md").read_text()

    assert len(settings_variables()) > 20
    assert {v for v in settings_variables() if f"{v}=" not in example} == set()
    assert {v for v in settings_variables() if f"`{v}`" not in readme} == set()


def test_flower_requires_basic_auth_in_procfile_and_compose() -> None:
    """Flower runs with --basic-auth taken from a required FLOWER_BASIC_AUTH in both files."""
    required = r"--basic-auth=\"?\$\{FLOWER_BASIC_AUTH:\?[^}]+\}"

    assert re.search(required, procfile()["flower"])
    assert re.search(required, services()["flower"]["command"])


def _stub_flower(env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the Procfile's flower line through /bin/sh, as honcho does, with `echo` in place of celery."""
    line = procfile()["flower"]
    assert line.startswith("celery -A cachetasks flower ")
    stub = "echo " + line.removeprefix("celery -A cachetasks flower ")
    return subprocess.run(["sh", "-c", stub], env=dict(env), capture_output=True, text=True, timeout=10, check=False)


def test_procfile_flower_refuses_to_start_without_credentials() -> None:
    """Without FLOWER_BASIC_AUTH the shell stops the flower line with a message naming the variable."""
    result = _stub_flower({"PATH": "/usr/bin:/bin"})

    assert result.returncode != 0
    assert "set FLOWER_BASIC_AUTH=user:password" in result.stderr
    assert result.stdout == ""


def test_procfile_flower_passes_the_credentials_to_basic_auth() -> None:
    """With FLOWER_BASIC_AUTH set, Flower gets it as --basic-auth and listens on loopback."""
    result = _stub_flower({"PATH": "/usr/bin:/bin", "FLOWER_BASIC_AUTH": "admin:pw"})

    assert result.returncode == 0
    assert result.stdout.split()[:3] == ["--port=5555", "--address=127.0.0.1", "--basic-auth=admin:pw"]


def test_redis_evicts_only_keys_with_a_ttl() -> None:
    """Compose's Redis, shared by broker and cache, has a memory limit and a volatile-* eviction policy."""
    tokens = command(services()["redis"])

    assert option(tokens, "--maxmemory")
    assert (option(tokens, "--maxmemory-policy") or "").startswith("volatile-")
