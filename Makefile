# The project's commands. `make run` and `make test` create the environment when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed
BUF := node_modules/.bin/buf
PROTO_FILES := $(shell find protos -name '*.proto' | sort)

.DEFAULT_GOAL := help
.PHONY: help venv run test test-sqlite test-postgres lint fmt protos protos-check buf-lint migrate k8s-check image lock clean reconcile screenshots bench bench-instructions bench-path bench-jobs bench-experiments

help: ## List the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP) ## Create .venv and install the project with its dev tools

$(BUF): package.json package-lock.json
	npm ci --no-audit --no-fund --silent
	touch $(BUF)

run: $(STAMP) ## Start every service on SQLite with demo data (Ctrl-C stops them)
	$(PY) -m shared.launcher

bench: bench-instructions bench-path bench-jobs bench-experiments ## Every benchmark in turn on PostgreSQL (minutes; figures in docs/benchmarks.md)

bench-experiments: $(STAMP) ## Benchmark experiment sampling and results, 100,000 of 1,000,000 customers, on PostgreSQL
	$(PY) -m bench.experiments

bench-instructions: $(STAMP) ## Count the instructions of an order, 1,000 credits, 1,000 wallets' interest and 1,000 lots' expiry under callgrind (within 1 %)
	$(PY) -m bench.instructions $(BENCH_INSTRUCTIONS_ARGS)

bench-path: $(STAMP) ## Benchmark place-order, quote and reads through the gateway on PostgreSQL (docs/benchmarks.md)
	$(PY) -m bench.path --out var/bench/path.json $(BENCH_PATH_ARGS)

bench-jobs: $(STAMP) ## Benchmark interest posting and expiry at 1,000,000 customers on PostgreSQL, with the SQL limits
	$(PY) -m bench.jobs $(BENCH_JOBS_ARGS)

reconcile: $(STAMP) ## Check every ledger and the services against each other (exit 1 on a mismatch)
	$(PY) -m shared.reconcile

test: $(STAMP) ## Run the whole suite (PostgreSQL when TEST_DATABASE_URL is set, else SQLite)
	$(PY) -m pytest $(PYTEST_ARGS)

test-sqlite: $(STAMP) ## The suite on SQLite even if TEST_DATABASE_URL is set
	env -u TEST_DATABASE_URL $(PY) -m pytest $(PYTEST_ARGS)

test-postgres: $(STAMP) ## The suite on the local PostgreSQL
	TEST_DATABASE_URL=$${TEST_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/postgres} $(PY) -m pytest $(PYTEST_ARGS)

screenshots: $(STAMP) ## Refresh docs/screenshots/ from the cabinet's browser test (needs /usr/bin/chromium)
	CABINET_SCREENSHOTS=$(CURDIR)/docs/screenshots $(PY) -m pytest -q -p no:cacheprovider tests/integration/test_cabinet_browser.py

lint: $(STAMP) $(BUF) protos-check ## buf lint, ruff, mypy, and generated code up to date
	$(BUF) lint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt: $(STAMP) ## Format and autofix
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

protos: $(STAMP) ## Regenerate the Python code in protos/ from the .proto files
	find protos -name '*_pb2*.py*' -delete
	PATH=$(CURDIR)/$(BIN):$$PATH $(PY) -m grpc_tools.protoc -I protos \
	  --python_out=protos --grpc_python_out=protos --mypy_out=protos --mypy_grpc_out=protos \
	  $(PROTO_FILES)

protos-check: $(STAMP) ## Fail if the committed generated code is not what `make protos` gives
	rm -rf $(VENV)/protos-check && mkdir -p $(VENV)/protos-check
	PATH=$(CURDIR)/$(BIN):$$PATH $(PY) -m grpc_tools.protoc -I protos \
	  --python_out=$(VENV)/protos-check --grpc_python_out=$(VENV)/protos-check \
	  --mypy_out=$(VENV)/protos-check --mypy_grpc_out=$(VENV)/protos-check $(PROTO_FILES)
	diff -r --exclude='*.proto' --exclude='__pycache__' protos $(VENV)/protos-check \
	  || { echo 'Generated code is stale: run `make protos` and commit the result.'; exit 1; }

buf-lint: $(BUF) ## Lint the contracts only
	$(BUF) lint

migrate: $(STAMP) ## Apply every service's migrations to its configured database
	for s in wallet points promotions checkout; do $(PY) -m services.$$s migrate || exit 1; done

k8s-check: $(STAMP) ## Render each k8s overlay, validate it strictly offline, check probes, policies, jobs
	@command -v kubectl >/dev/null 2>&1 || { \
	  echo 'k8s-check: kubectl is not on PATH. It renders the overlays (`kubectl kustomize`); install'; \
	  echo 'kubectl >= 1.27 (https://kubernetes.io/docs/tasks/tools/) and run `make k8s-check` again.'; exit 1; }
	K8S_CHECK_REQUIRED=1 $(PY) -m pytest -q -p no:cacheprovider tests/unit/test_k8s.py

image: ## Build the container image the manifests run (needs a Docker daemon)
	docker build -t loyalty-platform:dev .

lock: ## Re-resolve dependencies into constraints.txt (newest versions allowed by pyproject)
	rm -rf $(VENV)/lock && $(PYTHON) -m venv $(VENV)/lock
	$(VENV)/lock/bin/pip install --quiet -e '.[dev]'
	{ head -2 constraints.txt; $(VENV)/lock/bin/pip freeze --exclude-editable; } > constraints.new && mv constraints.new constraints.txt

clean: ## Remove the environment, the SQLite files and caches
	rm -rf $(VENV) node_modules var .pytest_cache .mypy_cache .ruff_cache
