# objfs: `make run` starts the appliance on the embedded store under ./var,
# `make test` runs the test suite, `make bench` the benchmarks.
VENV    ?= .venv
PYTHON  ?= python3
STORE   ?= var/store
MOUNT   ?= var/mnt
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed

.PHONY: all system-deps install run test bench lint clean install-systemd

all: install

system-deps:
	scripts/install-system-deps.sh

# pyfuse3 first, patched (scripts/install-pyfuse3.sh): objfs pins the same
# version, so its install keeps the patched build.
$(STAMP): pyproject.toml scripts/install-system-deps.sh scripts/install-pyfuse3.sh scripts/pyfuse3-fallocate.patch
	scripts/install-system-deps.sh
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	scripts/install-pyfuse3.sh $(PY)
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
	$(VENV)/bin/ruff format --check objfs s3sidecar tests bench

clean:
	rm -rf $(VENV) build *.egg-info

# Appliance install: the repo at /opt/objfs, units in /etc/systemd/system.
install-systemd: install
	test "$(CURDIR)" = /opt/objfs || { echo "clone the repo to /opt/objfs first"; exit 1; }
	install -d -m 0755 /etc/objfs
	test -e /etc/objfs/objfs.env || install -m 0644 systemd/objfs.env /etc/objfs/objfs.env
	install -m 0644 systemd/*.service systemd/*.timer /etc/systemd/system/
	. /etc/objfs/objfs.env && if [ -e "$$OBJFS_STORE/objfs.toml" ]; then $(VENV)/bin/objfs systemd-drives "$$OBJFS_STORE"; fi
	systemctl daemon-reload
	@echo "now: objfs init /srv/objfs --drive /srv/drives/d0 ... && objfs systemd-drives /srv/objfs && systemctl daemon-reload && systemctl enable --now objfs objfs-scrub.timer objfs-audit-verify.timer"
