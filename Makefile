# pmp-bench: every target installs what it needs first (see README.md).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The torch build to install. The default pins the release this project is tested with;
# override, e.g. `make install TORCH="torch torchvision"`, to take another one.
TORCH ?= torch==2.14.1 torchvision==0.29.1
SUITE ?= quick
# Suites `make bench` runs after SUITE: the full-batch panels of quick (digits) and gpu-quick.
PANELS_quick ?= quick-fullbatch
PANELS_gpu-quick ?= gpu-quick-fullbatch
DEVICE ?= auto
# `make bench SCHEDULER=local:2` (or local-cuda, tcp://HOST:PORT): the suites' cells on a
# Dask cluster (docs: Scaling out); empty: one process, as before.
SCHEDULER ?=
SCHEDULE := $(if $(SCHEDULER),--scheduler $(SCHEDULER),)
OUT ?= results
# `make ui`: the port, and the output folder whose mlflow.db the UI shows.
PORT ?= 5000
STORE ?= $(OUT)
STAMP := $(VENV)/.installed
# `make mlflow-server`: the PostgreSQL database of the run store, and the server's port.
MLFLOW_DB ?= postgresql://postgres:postgres@127.0.0.1:5432/mlflow
MLFLOW_PORT ?= 5001

.PHONY: install test test-slow test-all docs docs-check lint clean bench budgets load-invariance data ui mlflow-server tune matched matched-fronts dashboard perf gpu-check

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[dev,postgres,dashboard]'
	@touch $(STAMP)

# `make test`: everything but the tests marked slow (subprocess kills, whole suites);
# `make test-slow`: those; `make test-all`: both. CI runs both.
test: install
	$(PY) -m pytest -m "not slow"

test-slow: install
	$(PY) -m pytest -m slow

test-all: install
	$(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check bench optimizers tests
	$(VENV)/bin/ruff format --check bench optimizers tests
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy --strict optimizers

# `make docs`: the generated tables rewritten from the code, then the MkDocs site in site/.
# `make docs-check` (CI): a stale generated table or a broken link or anchor fails.
docs: install
	$(PY) -m bench.docs
	$(VENV)/bin/mkdocs build --strict --site-dir site

docs-check: install
	$(PY) -m bench.docs --check
	@site=$$(mktemp -d) && $(VENV)/bin/mkdocs build --strict --site-dir $$site; \
		status=$$?; rm -rf $$site; exit $$status

data: install
	$(PY) -m bench data --dataset fashion-mnist

bench: install data
	$(PY) -m bench run --suite $(SUITE) --device $(DEVICE) --out $(OUT) $(SCHEDULE)
	$(PY) -m bench report --suite $(SUITE) --out $(OUT)
	@for panel in $(PANELS_$(SUITE)); do \
		$(PY) -m bench run --suite $$panel --device $(DEVICE) --out $(OUT) $(SCHEDULE) && \
		$(PY) -m bench report --suite $$panel --out $(OUT) || exit 1; \
	done

# The budget sweep (docs: Running suites, Budgets): quick's mini-batch methods at 2, 6 and 18 epochs, ten
# seeds; its report says whether the ranking holds across budgets. Hours on a CPU.
budgets: install data
	$(PY) -m bench run --suite quick-budgets --device $(DEVICE) --out $(OUT) $(SCHEDULE)
	$(PY) -m bench report --suite quick-budgets --out $(OUT)

# The same suite twice, quiet and beside a CPU hog: identical accuracy and sparsity per cell.
load-invariance: install data
	$(PY) scripts/load_invariance.py --suite $(SUITE) --out $(OUT)/load-invariance

# One worker: a single user on a laptop needs no more, and it starts in seconds. No job
# consumers (MLflow 3 starts seven, for GenAI judges; training runs never use them).
ui: install
	@echo "Open http://127.0.0.1:$(PORT); once per browser, click 'Model training' at the top of MLflow's sidebar (docs: MLflow)"
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(VENV)/bin/mlflow server --backend-store-uri $${MLFLOW_TRACKING_URI:-sqlite:///$(abspath $(STORE))/mlflow.db} \
		--host 127.0.0.1 --port $(PORT) --workers 1

# Live tracking for Dask workers: mlflow server on 127.0.0.1 with runs in PostgreSQL and
# artifacts under OUT; it prints the MLFLOW_TRACKING_URI to export (docs: Scaling out).
mlflow-server: install
	$(PY) -m bench.distributed.server --backend $(MLFLOW_DB) \
		--artifacts $(abspath $(OUT))/mlflow-server-artifacts --port $(MLFLOW_PORT)

tune: install data
	$(PY) -m bench tune-all --setting quick --out $(OUT)

# Accuracy at sparsity matched by construction (docs: Matched sparsity); the budgets'
# studies can run side by side (`make matched EPOCHS=2` and `EPOCHS=4`), a last
# `make matched` then reads both back and writes the joint tables.
EPOCHS ?= 2,4
matched: install
	$(PY) -m bench matched --suite matched-digits --epochs $(EPOCHS) --out $(OUT)

# The extra: accuracy at sparsity >= s picked from the tuned fronts of `make tune`.
matched-fronts: install data
	$(PY) -m bench matched-fronts --setting quick --out $(OUT)

# Without OPTUNA_STORAGE, the default SQLite file must exist: no study yet is said in a line.
dashboard: install
	@if [ -z "$$OPTUNA_STORAGE" ] && [ ! -f "$(OUT)/optuna.db" ]; then \
	  echo "error: no study yet: $(OUT)/optuna.db does not exist; run \`make tune\` (or \`python -m bench tune ...\`) first, or set OPTUNA_STORAGE=<url>" >&2; \
	  exit 2; \
	fi
	$(VENV)/bin/optuna-dashboard $${OPTUNA_STORAGE:-sqlite:///$(OUT)/optuna.db} --host 127.0.0.1 --port 8080

perf: install
	$(PY) -m bench perf --device $(DEVICE)

gpu-check: install
	OUT=$(OUT) bash scripts/gpu-check.sh

clean:
	rm -rf $(VENV) build site *.egg-info .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
