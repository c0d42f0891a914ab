# The two commands a new machine needs: `make run` (the main job) and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
DATASETS_DIR ?= ../shared/datasets
export DATASETS_DIR
export GX_ANALYTICS_ENABLED := false
export MLFLOW_DISABLE_TELEMETRY := true
export DVC_NO_ANALYTICS := 1
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION := false

STAMP := $(VENV)/.installed

.PHONY: setup run test test-fast lint clean data image

setup: $(STAMP)

# Re-installs only when the lock or the project metadata changes; otherwise a no-op.
$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	# KServe's SDK, for its API types only (the manifest schema test); its own pins (pandas<3) clash with the lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps kserve==0.21.0
	@touch $(STAMP)

# The main job: the whole KFP DAG locally on ML-1M (users 1–2999): every registered model, the multi-domain
# ones routed by hand-crafted and by mined domains, at the FLOP budget of the default dnn.
# RUN_EPOCHS is a cap on epochs per training run (the pipeline's own default cap is 20): early stopping on
# validation AUC (patience 2, best weights restored) ends a run sooner; a run that reaches the cap is cut short.
RUN_EPOCHS ?= 3
RUN_SEEDS ?= 0
run: setup
	$(BIN)/mdctr pipeline run --dataset ml-1m --domain-sources handcrafted,mined --max-epochs $(RUN_EPOCHS) --seeds $(RUN_SEEDS)

# The whole suite (what CI runs, .ci/run): every tier, with the 25 slowest tests listed at the end.
test: setup
	$(BIN)/python -m pytest -q --durations=25

# The inner loop: everything not marked integration (real servers, the pipeline), container (Docker) or slow
# (markers in pyproject.toml); README "Testing" has its time.
FAST_TESTS := not integration and not container and not slow
test-fast: setup
	$(BIN)/python -m pytest -q -m "$(FAST_TESTS)" --durations=10

lint: setup
	$(BIN)/ruff check src tests components pipelines benchmarks
	$(BIN)/ruff format --check src tests components pipelines benchmarks
	$(BIN)/lint-imports
	$(BIN)/hadolint Dockerfile

# The container image (Dockerfile targets runtime and serve), tagged mdctr.image_ref() = <version>-<git sha>:
# a Docker engine (the running one, or scripts/local-docker starts one under runs/docker), the wheelhouse from
# requirements.lock (scripts/wheelhouse), a base image (official python slim, else debootstrap: scripts/base-image).
# Reused when the exact tags exist. TORCH_VARIANT=gpu for the CUDA variant; docs/deploy.md.
image: setup
	PYTHON=$(BIN)/python scripts/image

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info

# Version the raw datasets with DVC (data/ -> data.dvc) and push them to the default remote (docs/data.md).
data: setup
	$(BIN)/mdctr data import --source $(DATASETS_DIR)
