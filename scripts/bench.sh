#!/usr/bin/env bash
# `make bench`: the benchmarks in bench/, against the local Redis and PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ ! -f bench/run_all.py ]]; then
  echo "bench.sh: bench/run_all.py does not exist yet; nothing to run"
  exit 0
fi
scripts/venv.sh requirements-dev.txt
scripts/ensure-services.sh redis postgres
exec .venv/bin/python bench/run_all.py "$@"
