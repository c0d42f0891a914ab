# syntax=docker/dockerfile:1
# The mdctr image: every pipeline step (target `runtime`) and MLflow pyfunc serving (target `serve`).
#
#   docker build --target runtime -t "$(.venv/bin/python -c 'import mdctr; print(mdctr.IMAGE)')" .
#   docker build --target serve   -t "$(.venv/bin/python -c 'import mdctr; print(mdctr.IMAGE)')-serve" .
#
# The tag comes from mdctr.IMAGE (src/mdctr/__init__.py, versioned by the package), the one name the pipeline's
# components and the KServe manifest use. Dependencies come from requirements.lock, the same lock the Makefile
# and CI install, so the image and a laptop run identical versions.

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

# ---- deps: the locked dependencies in a virtualenv; cached until requirements.lock changes ------------------
FROM ${PYTHON_IMAGE} AS deps
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY requirements.lock /tmp/requirements.lock
# The lock pins torch==2.13.0+cpu, a local version that only the PyTorch CPU index serves (the default index
# would pull the multi-GB CUDA build).
RUN pip install --extra-index-url https://download.pytorch.org/whl/cpu -r /tmp/requirements.lock

# ---- build: the mdctr package itself (a regular, non-editable install) --------------------------------------
FROM deps AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-deps . && mdctr --help > /dev/null

# ---- runtime: what every KFP task runs in -------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
# the code version, recorded on every MLflow parent run (mdctr.git_sha); the image has no .git
ARG GIT_SHA=""
# git: DVC resolves data revisions from the project's git repository. Unpinned on purpose: Debian security
# updates replace old package versions, and the base image tag pins the distribution release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 10001 --create-home --shell /usr/sbin/nologin mdctr
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/home/mdctr \
    PYTHONUNBUFFERED=1 \
    GX_ANALYTICS_ENABLED=false \
    MLFLOW_DISABLE_TELEMETRY=true \
    DVC_NO_ANALYTICS=1 \
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false \
    MDCTR_GIT_SHA=${GIT_SHA}
WORKDIR /home/mdctr
USER 10001
# KFP replaces the command of each task (python3 -m kfp.dsl.executor_main …); this default is for humans.
CMD ["mdctr", "--help"]

# ---- serve: MLflow pyfunc model server for a registered model (KServe custom predictor or plain Deployment) --
FROM runtime AS serve
ENV MODEL_URI=models:/mdctr-ctr@champion \
    PORT=8080
EXPOSE 8080
# --env-manager local: the image already holds the locked dependencies the model was logged with.
CMD ["sh", "-c", "exec mlflow models serve --model-uri \"$MODEL_URI\" --host 0.0.0.0 --port \"$PORT\" --env-manager local"]
