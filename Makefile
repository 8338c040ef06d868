# Thin wrappers: the logic is in scripts/, which CI (.ci/run) calls too.
.PHONY: run test lint bench clean

run:  ## the service with demo data: worker, collector, beat, Flower (Ctrl-C stops)
	scripts/run.sh

test:  ## the test suite against local Redis and PostgreSQL (extra arguments: PYTEST_ARGS="-x")
	scripts/test.sh

lint:  ## ruff check, ruff format --check, mypy
	scripts/lint.sh

bench:  ## the benchmarks in bench/
	scripts/bench.sh

clean:  ## caches and the default data directory (demo database and files); keeps .venv
	rm -rf .pytest_cache .mypy_cache .ruff_cache data artifacts
	find . -path ./.venv -prune -o -name __pycache__ -type d -exec rm -rf {} +
