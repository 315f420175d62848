# Developer entry points. `make run` and `make test` are the README's quick start.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: venv gen lint run run-vendors test test-long bench redis clean

venv: $(STAMP)

$(STAMP): pyproject.toml api/pyproject.toml $(shell find protos -name '*.proto')
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q grpcio-tools mypy-protobuf
	$(PY) scripts/gen_protos.py
	$(PIP) install -q -e ./api -e '.[dev]'
	touch $(STAMP)

# Regenerate the stubs from protos/ (also done by `make venv` whenever a .proto changes).
gen: venv
	$(PY) scripts/gen_protos.py

lint: venv
	$(VENV)/bin/buf lint

redis:
	VENV=$(VENV) bash scripts/dev_redis.sh

# Start Redis and serve every service on 127.0.0.1:50051 with the dev config and demo cards.
run: venv redis
	$(VENV)/bin/giftcard serve all --config config/dev.yaml

# `make run` plus the five vendor sandboxes, with a demo merchant per vendor (README).
run-vendors: venv redis
	VENV=$(VENV) bash scripts/dev_vendors.sh
	GIFTCARD_MERCHANTS_FILE=config/dev-vendors/merchants.yaml $(VENV)/bin/giftcard serve all --config config/dev.yaml

# The whole test suite (tests start their own Redis and servers on free localhost ports).
test: venv
	VENV=$(VENV) bash scripts/ensure_redis.sh >/dev/null
	$(VENV)/bin/buf lint
	$(PY) -m pytest -q

test-long: venv
	$(PY) -m pytest -q --run-slow

# Benchmark report -> bench/results/latest.{json,md} (bench/README.md); needs ~15 min on 2 cores.
bench: venv
	GIFTCARD_TEST_REDIS_SERVER=$$(VENV=$(VENV) bash scripts/ensure_redis.sh) $(PY) -m bench

clean:
	rm -rf $(VENV) api/giftcard .run .pytest_cache .hypothesis
