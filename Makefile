# Encore task runner. `make demo` and `make test` are the README's two commands: each
# creates the virtual environment first if it is missing, so a fresh machine needs nothing else.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-slow lint bench clean

install: $(STAMP)
	# OS packages the tests drive for real (Debian's): the shared user store's server (tests
	# start their own on a free port) and the browser of the listening room's test.
	@command -v redis-server >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server)
	@(command -v chromium && command -v chromedriver) >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip wheel
	# torch first and pinned: the CPU build of 2.13.0 is what the project is tested with.
	$(BIN)/pip install --quiet "torch==2.13.0"
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: install
	$(BIN)/encore demo

test: install
	$(BIN)/pytest -m "not slow" -q

test-slow: install
	$(BIN)/pytest -m slow -q

lint: install
	$(BIN)/ruff check rl services tests benchmarks
	$(BIN)/ruff format --check rl services tests benchmarks
	$(BIN)/mypy rl services

# Each benchmark's output is also kept in $(BENCH_OUT)/<name>.txt for `encore report`.
BENCH_OUT ?= $${ENCORE_DATA:-data}/reports/benchmarks
bench: install
	@mkdir -p $(BENCH_OUT)
	@for script in benchmarks/bench_*.py; do echo "== $$script"; \
	  out=$(BENCH_OUT)/$$(basename $$script .py).txt; \
	  ($(BIN)/python $$script 2>&1; echo "exit status $$?") | tee $$out.partial; \
	  tail -n 1 $$out.partial | grep -qx "exit status 0" || exit 1; mv $$out.partial $$out; done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .mypy_cache
