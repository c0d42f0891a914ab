# The mdctr image: every pipeline step (target `runtime`) and the model server (target `serve`).
#
#   make image          # = scripts/image: wheelhouse, base, both targets, tagged by mdctr.image_ref()
#
# The tag comes from mdctr.image_ref() (src/mdctr/__init__.py): the package version plus the git commit, the one
# name the pipeline's components and the KServe manifest use, so two different codes never share a tag.
#
# Offline by design: the only package source is a wheelhouse gathered on the host from requirements.lock
# (scripts/wheelhouse → build/wheelhouse, in the build context), the same lock the Makefile and CI install, so
# the image and a laptop run identical versions and the build needs no index (nor the PyTorch CPU index).
# No `# syntax=` line: BuildKit would pull docker/dockerfile from a registry; the legacy builder needs none.
#
# Build arguments:
#   BASE_IMAGE      a Python 3.11 Debian image; default the official slim image. Where no registry is reachable,
#                   scripts/base-image makes one from a debootstrap bookworm rootfs (mdctr-base:bookworm).
#   TORCH_VARIANT   cpu (default: the +cpu torch of the lock, image ≈ 2 GB) or gpu (torch without +cpu, the CUDA
#                   build; its wheelhouse comes from `TORCH_VARIANT=gpu scripts/wheelhouse`)
#   EXTRA_CA_CERT   PEM text of an extra CA certificate (proxies that re-sign TLS); trusted by the system store
#                   and, through the variables below, by pip, requests, boto3 and DVC
#   GIT_SHA         the code version, recorded on every MLflow parent run (the image has no .git)

ARG BASE_IMAGE=python:3.11.11-slim-bookworm

# ---- deps: the locked dependencies in a virtualenv; cached until requirements.lock or the wheelhouse changes --
FROM ${BASE_IMAGE} AS deps
ARG TORCH_VARIANT=cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INDEX=1 \
    PIP_FIND_LINKS=/tmp/wheelhouse \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY requirements.lock /tmp/requirements.lock
COPY build/wheelhouse /tmp/wheelhouse
# --no-index: the wheelhouse or nothing. The gpu variant drops the "+cpu" local version of torch.
RUN if [ "$TORCH_VARIANT" = gpu ]; then sed -i -E 's/^(torch==[^+]+)\+cpu$/\1/' /tmp/requirements.lock; \
    elif [ "$TORCH_VARIANT" != cpu ]; then echo "TORCH_VARIANT must be cpu or gpu" >&2; exit 1; fi \
    && pip install --no-index --find-links /tmp/wheelhouse -r /tmp/requirements.lock

# ---- build: the mdctr package itself, as a wheel (built offline: setuptools/wheel come from the wheelhouse) ---
FROM deps AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-index --find-links /tmp/wheelhouse --no-deps --wheel-dir /dist .

# ---- runtime: what every KFP task runs in -------------------------------------------------------------------
FROM ${BASE_IMAGE} AS runtime
ARG EXTRA_CA_CERT=""
# No apt-get: the base has everything (fetch_data reads data by DVC md5 from the remote, no git checkout).
RUN if [ -n "$EXTRA_CA_CERT" ]; then \
        printf '%s\n' "$EXTRA_CA_CERT" > /usr/local/share/ca-certificates/mdctr-extra.crt \
        && update-ca-certificates; \
    fi \
    && useradd --uid 10001 --create-home --shell /usr/sbin/nologin mdctr
# The locked dependencies (≈ 2 GB) in a layer of their own, unchanged until the lock changes; the code (a small
# wheel) comes after, so a code change rebuilds and pushes only that.
COPY --from=deps /opt/venv /opt/venv
COPY --from=build /dist /tmp/dist
ENV PATH=/opt/venv/bin:$PATH
RUN pip install --no-cache-dir --no-index --no-deps /tmp/dist/*.whl \
    && rm -rf /tmp/dist \
    && mdctr --help > /dev/null
ARG GIT_SHA=""
LABEL org.opencontainers.image.source="https://github.com/mdctr/mdctr" \
      org.opencontainers.image.revision="${GIT_SHA}"
ENV HOME=/home/mdctr \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt \
    AWS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    GX_ANALYTICS_ENABLED=false \
    MLFLOW_DISABLE_TELEMETRY=true \
    DVC_NO_ANALYTICS=1 \
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false \
    MDCTR_GIT_SHA=${GIT_SHA}
WORKDIR /home/mdctr
USER 10001
# KFP replaces the command of each task (python3 -m kfp.dsl.executor_main …); this default is for humans.
CMD ["mdctr", "--help"]

# ---- serve: the model server for a registered model (KServe custom predictor or plain Deployment) -----------
FROM runtime AS serve
ENV MODEL_URI=models:/mdctr-ml-1m@champion \
    PORT=8080
EXPOSE 8080
CMD ["sh", "-c", "exec mdctr serve --model-uri \"$MODEL_URI\" --host 0.0.0.0 --port \"$PORT\""]
