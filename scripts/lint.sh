#!/usr/bin/env bash
# `make lint`: ruff (lint and format) over the repository, mypy over what pyproject.toml lists.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/venv.sh requirements-dev.txt

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
