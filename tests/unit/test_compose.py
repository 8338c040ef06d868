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
# compose's forms: $$, ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}
REFERENCE = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


class MissingVariable(Exception):
    """A `${NAME:?...}` reference whose variable is unset or empty."""


@functools.cache
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def procfile(name: str = "Procfile") -> dict[str, str]:
    lines = (ROOT / name).read_text().splitlines()
    return dict(line.split(":", 1) for line in lines if re.match(r"^[A-Za-z0-9_-]+:", line))


def settings_variables() -> set[str]:
    """Every variable name cachetasks/settings.py reads, taken from its source."""
    source = (ROOT / "cachetasks" / "settings.py").read_text()
    return set(re.findall(r'"((?:CACHETASKS|CELERY|AWS)_[A-Z0-9_]+)"', source))


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Expand `text` as docker compose does with the variables in `env`."""

    def expand(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        name, op, arg = match["name"], match["op"], match["arg"] or ""
        value = env.get(name)
        missing = value is None or (op is not None and op.startswith(":") and value == "")
        if op in ("-", ":-"):
            return arg if missing else str(value)
        if op in ("?", ":?"):
            if missing:
                raise MissingVariable(f"{name}: {arg}")
            return str(value)
        return value or ""

    return REFERENCE.sub(expand, text)


def required_variables(text: str) -> set[str]:
    return {m["name"] for m in REFERENCE.finditer(text) if m["op"] in ("?", ":?")}


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


def test_compose_app_environment_passes_settings_validation_with_s3() -> None:
    """With its required secrets given, the app environment parses into S3 settings for MinIO and PostgreSQL."""
    env = {name: interpolate(str(value), GIVEN_SECRETS) for name, value in app_environment().items()}

    parsed = Settings.from_env(env)

    assert (parsed.storage, parsed.s3_endpoint_url) == ("s3", "http://minio:9000")
    assert parsed.database_url.startswith("postgresql://")
    assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == ("secret", "secret")
    assert parsed.broker_url != parsed.redis_url


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
    line = procfile()["flower"].strip()
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
