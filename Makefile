# Thin wrappers: the logic is in scripts/, which CI (.ci/run) calls too.
.PHONY: run test test-fast lint bench clean

run:  ## the service with demo data: worker, collector, beat, Flower (Ctrl-C stops)
	scripts/run.sh

test:  ## every test, with real worker and beat processes (extra arguments: PYTEST_ARGS="-x")
	scripts/test.sh all

test-fast:  ## unit and adapter tests against the real servers, no worker or beat process (about a minute)
	scripts/test.sh fast

lint:  ## ruff check, ruff format --check, mypy
	scripts/lint.sh

bench:  ## the benchmarks in bench/
	scripts/bench.sh

clean:  ## caches and the default data directory (demo database and files); keeps .venv
	rm -rf .pytest_cache .mypy_cache .ruff_cache data artifacts
	find . -path ./.venv -prune -o -name __pycache__ -type d -exec rm -rf {} +
