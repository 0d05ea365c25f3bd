# objfs: `make run` starts the appliance on the embedded store under ./var,
# `make test` runs the test suite, `make bench` the benchmarks.
VENV    ?= .venv
PYTHON  ?= python3
STORE   ?= var/store
MOUNT   ?= var/mnt
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed

.PHONY: all system-deps install run test bench lint clean

all: install

system-deps:
	scripts/install-system-deps.sh

$(STAMP): pyproject.toml scripts/install-system-deps.sh
	scripts/install-system-deps.sh
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(PY) -m objfs.appliance $(STORE) --mount $(MOUNT)

test: install
	$(VENV)/bin/pytest -q -p no:cacheprovider $(PYTEST_ARGS)

bench: install
	$(PY) -m bench $(BENCH_ARGS)

lint: install
	$(VENV)/bin/ruff check objfs s3sidecar tests bench

clean:
	rm -rf $(VENV) build *.egg-info
