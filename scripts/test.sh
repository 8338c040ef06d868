#!/usr/bin/env bash
# `make test`: the whole suite against real Redis and PostgreSQL.
# Extra pytest arguments: PYTEST_ARGS="-x -k claim" or scripts/test.sh -x -k claim.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/venv.sh requirements-dev.txt
scripts/ensure-services.sh redis postgres

eval "set -- ${PYTEST_ARGS:-} \"\$@\""
# pytest exits 5 when it collected no test; like any non-zero code, that fails the run.
exec .venv/bin/python -m pytest "$@"
