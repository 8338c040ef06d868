#!/usr/bin/env bash
# `make test` / `make test-fast`: the suite against real Redis, PostgreSQL and MariaDB.
# The first argument may name a tier: `fast` (unit and adapter tests: no worker or beat process)
# or `all` (the default, what CI runs). Further pytest arguments: PYTEST_ARGS="-x -k claim"
# or scripts/test.sh fast -x -k claim.
set -euo pipefail
cd "$(dirname "$0")/.."

tier=all
if [[ ${1:-} == fast || ${1:-} == all ]]; then tier=$1; shift; fi

scripts/venv.sh requirements-dev.txt
scripts/ensure-services.sh redis postgres mariadb azurite

eval "set -- ${PYTEST_ARGS:-} \"\$@\""
if [[ $tier == fast ]]; then set -- tests/unit tests/adapters "$@"; fi
# Two processes (CACHETASKS_TEST_PROCESSES=0: one): most tests wait on servers, timers and other
# processes rather than on the CPU. tests/conftest.py orders the suite for this split.
set -- -n "${CACHETASKS_TEST_PROCESSES:-2}" --dist worksteal "$@"
# pytest exits 5 when it collected no test; like any non-zero code, that fails the run.
exec .venv/bin/python -m pytest "$@"
