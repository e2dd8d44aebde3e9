# the0 API. `make run` starts the dev stack; `make test` runs every test.
# Both create the virtualenv and install what they need on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PG_BIN := /usr/lib/postgresql/15/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PROTOS := $(shell find proto/the0 -name '*.proto' | LC_ALL=C sort)
# Vendored protovalidate rules (buf.validate): no PyPI package ships their
# google.protobuf Python code, so gen/ has it beside ours.
VENDORED_PROTOS := proto/buf/validate/validate.proto

.PHONY: bench-deps docs-assets ts-client help install system-deps run fake-runtime serve test test-unit gen gen-check lint breaking bench envoy-config clean check

help:
	@echo "make run        dev stack on embedded defaults: gRPC :50051, REST (Envoy) :8080 [REPLICAS=N]"
	@echo "make serve      the gRPC server alone, every dependency from the environment"
	@echo "make fake-runtime  development aid beside make run: fakes the platform runtime (bots and backtests)"
	@echo "make test       the whole test suite (starts its own PostgreSQL, NATS, S3, Envoy)"
	@echo "make gen        regenerate gen/ from proto/;  make gen-check: fail if gen/ is stale"
	@echo "make lint       buf lint + buf format;        make bench [BENCH=name]: benchmarks"
	@echo "make check      mypy (strict), ruff and the import contracts over the Python code"

# Node packages: the docs page's assets (envoy/docs, served by Envoy at /api/docs) and the
# TypeScript client (clients/typescript). `npm ci` from the lockfiles; no install scripts run.
DOCS_STAMP := envoy/docs/node_modules/.package-lock.json
TS_STAMP := clients/typescript/node_modules/.package-lock.json

# The docs assets first: the package (even an editable install) carries two of them (pyproject's
# force-include), so building it needs them.
$(STAMP): pyproject.toml | $(DOCS_STAMP)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

$(DOCS_STAMP): envoy/docs/package-lock.json
	cd envoy/docs && npm ci --ignore-scripts --no-audit --no-fund
	touch $@

$(TS_STAMP): clients/typescript/package-lock.json
	cd clients/typescript && npm ci --ignore-scripts --no-audit --no-fund
	touch $@

docs-assets: $(DOCS_STAMP)

# The TypeScript client: types generated from the OpenAPI document, then type-checked and compiled.
ts-client: $(TS_STAMP)
	cd clients/typescript && npm run --silent build

install: $(STAMP) $(DOCS_STAMP)

# Debian packages: PostgreSQL binaries for the test suite's throwaway cluster, jq for the README's
# curl flow (run by a test), and the headless chromium the browser test drives through Playwright.
# Installed only when missing.
system-deps:
	@missing=""; \
	[ -x $(PG_BIN)/initdb ] || missing="$$missing postgresql"; \
	command -v jq >/dev/null || missing="$$missing jq"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -q && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi

# make run REPLICAS=3: N server processes behind the one Envoy (N > 1 on a throwaway PostgreSQL).
REPLICAS ?= 1
run: $(STAMP) $(DOCS_STAMP)
	$(BIN)/the0-dev --replicas $(REPLICAS)

# Development aid, not the platform runtime: runs bots (deployments fetched through the platform
# API with the dev stack's runtime key, log lines, executions) and answers backtests with made-up results.
fake-runtime: $(STAMP)
	$(BIN)/python -m the0.devtools.fake_runtime

serve: $(STAMP)
	$(BIN)/the0-server

test: $(STAMP) system-deps $(DOCS_STAMP) ts-client
	$(BIN)/pytest -q

test-unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

# gen/: Python messages, gRPC stubs, .pyi stubs, the Envoy descriptor set and
# the OpenAPI 3.1 document. Deterministic: same input, same bytes.
gen: $(STAMP) system-deps
	rm -rf gen && mkdir -p gen/openapi
	PATH=$(BIN):$$PATH $(PY) -m grpc_tools.protoc -Iproto \
	  --python_out=gen --grpc_python_out=gen --mypy_out=gen --mypy_grpc_out=gen $(PROTOS)
	PATH=$(BIN):$$PATH $(PY) -m grpc_tools.protoc -Iproto --python_out=gen --mypy_out=gen $(VENDORED_PROTOS)
	$(PY) -m grpc_tools.protoc -Iproto --include_imports --include_source_info \
	  --descriptor_set_out=gen/the0.binpb $(PROTOS) google/rpc/status.proto google/rpc/error_details.proto
	@# The OpenAPI 3.1 document (JSON and YAML) from the descriptor set; the0.platform.v1 is
	@# internal (never on the REST edge) and not in it.
	$(PY) -m the0.server.openapi gen/the0.binpb gen/openapi
	$(PY) -m the0.server.envoy_config > envoy/envoy.yaml

gen-check: gen
	@git add -N gen envoy >/dev/null 2>&1 || true
	@if ! git diff --quiet --exit-code -- gen envoy; then \
	  git diff --stat -- gen envoy; echo "gen/ or envoy/envoy.yaml is stale: run 'make gen' and commit"; exit 1; \
	fi
	@echo "gen/ is up to date"

lint: $(STAMP)
	$(BIN)/buf lint
	$(BIN)/buf format -d --exit-code

# Static checks of the Python code; configuration in pyproject.toml ([tool.mypy],
# [tool.ruff], [tool.importlinter]).
check: $(STAMP)
	$(BIN)/mypy
	$(BIN)/ruff check server clients devtools tests
	$(BIN)/lint-imports

breaking: $(STAMP)
	$(BIN)/buf breaking --against '.git#branch=main'

# make bench (all) or make bench BENCH="auth outbox"; results go in docs/benchmarks.md.
bench: $(STAMP) system-deps bench-deps $(DOCS_STAMP)
	$(PY) -m tests.bench $(BENCH)

# Load generators of the benchmarks (not needed by the tests): h2load and wrk.
bench-deps:
	@missing=""; \
	command -v h2load >/dev/null || missing="$$missing nghttp2-client"; \
	command -v wrk >/dev/null || missing="$$missing wrk"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -q && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi

clean:
	rm -rf $(VENV) .the0 .pytest_cache
