# The two commands: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-dev

.PHONY: test demo bench bench-wal bench-contracts soak failover lint fmt clean unit integration faults deploy-check

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

test: $(STAMP)
	$(PY) -m pytest -q

unit: $(STAMP)
	$(PY) -m pytest -q -m unit

faults: $(STAMP)
	$(PY) -m pytest -q tests/faults

integration: $(STAMP)
	$(PY) -m pytest -q -m "integration or acceptance"

demo: $(STAMP)
	$(PY) -m devtools.demo $(if $(EVENTS),--events $(EVENTS))

bench: $(STAMP)
	$(PY) -m bench.run

bench-wal: $(STAMP)
	$(PY) -m bench.wal

bench-contracts: $(STAMP)
	$(PY) -m bench.contracts

soak: $(STAMP)
	$(PY) -m bench.soak

failover: $(STAMP)
	$(PY) -m bench.failover

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

fmt: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# The compose stack in real containers (root, Debian's docker.io/docker-compose/debootstrap;
# several minutes; not part of `make test`): deploy/check/run.sh.
deploy-check: $(STAMP)
	bash deploy/check/run.sh
