# Set-up is idempotent: a stamp file records that .venv holds this pyproject's dependencies.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
PYTEST_ARGS ?=

.PHONY: setup demo test test-all bench clean promtool

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# the CPU build of torch first, so no range below can pull the CUDA build
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[embedded,dev]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

demo: setup
	$(BIN)/pairstream demo

# promtool checks deploy/prometheus/alerts.yml in the tests; Debian's prometheus package has it
promtool:
	@command -v promtool >/dev/null || apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1 \
		|| echo "promtool could not be installed: tests/test_alerts.py will skip its promtool check"

test: setup promtool
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

test-all: setup promtool
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: setup
	$(BIN)/pairstream bench ingest --events 300000
	$(BIN)/pairstream bench serve

clean:
	rm -rf .pairstream reports
