# syntax=docker/dockerfile:1
#
# calogan images, two targets (see docs/deploy.md):
#   docker build --target cpu -t calogan:cpu .   python slim + tensorflow-cpu; int8 backend when shipped
#   docker build --target gpu -t calogan:gpu .   official TensorFlow GPU image; float32 on the GPU
# The shipped model (models/) is baked in: an image is one reproducible (code, model) pair.
#
# Each image runs ONE server process with ONE model per device: a second worker process would load
# a second copy of the model, compete for the same GPU (or cores) and split the traffic between two
# dynamic batchers, so both would form smaller batches. Scale with replicas (compose --scale, a k8s
# Deployment's replicas / HPA) instead.

ARG PYTHON_VERSION=3.11
# Must be a published tensorflow/tensorflow:<version>-gpu tag; keep it at the version CI tests with.
ARG TF_VERSION=2.21.0

# ---------------------------------------------------------------------------------------------- gpu
FROM tensorflow/tensorflow:${TF_VERSION}-gpu AS gpu-build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# --system-site-packages: the image's CUDA build of TensorFlow is used as is, never reinstalled.
# --without-pip plus the image's own pip (--python): no need for the distribution's python3-venv.
RUN python3 -m venv --system-site-packages --without-pip /opt/venv
# Dependencies first, in their own layer: a code change does not re-download them.
COPY pyproject.toml README.md ./
COPY deploy/requirements.py deploy/requirements.py
RUN python3 deploy/requirements.py --without-tensorflow > requirements.txt \
    && python3 -m pip --python /opt/venv/bin/python install --no-cache-dir -r requirements.txt
COPY app/ app/
# --no-deps: the project's tensorflow-cpu requirement would otherwise replace the GPU build.
RUN python3 -m pip --python /opt/venv/bin/python install --no-cache-dir --no-deps .

FROM tensorflow/tensorflow:${TF_VERSION}-gpu AS gpu
RUN groupadd --system --gid 10001 calogan \
    && useradd --system --uid 10001 --gid calogan --no-create-home --shell /usr/sbin/nologin calogan
# Same base image, same interpreter path: the virtual environment moves between stages as is.
COPY --from=gpu-build /opt/venv /opt/venv
WORKDIR /srv/calogan
# Owned by root and not writable by the service user: the model cannot be altered at run time.
COPY models/ models/
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    KERAS_HOME=/tmp/.keras \
    MPLCONFIGDIR=/tmp/matplotlib \
    TF_CPP_MIN_LOG_LEVEL=2 \
    CALOGAN_HOST=0.0.0.0 \
    CALOGAN_PORT=8000 \
    CALOGAN_MODEL_DIR=/srv/calogan/models/conv2d \
    CALOGAN_BACKEND=tf \
    CALOGAN_DEVICE=gpu \
    CALOGAN_TMP_DIR=/tmp \
    CALOGAN_MAX_BATCH_SIZE=2048 \
    CALOGAN_MAX_QUEUE_DELAY_MS=5 \
    CALOGAN_DRAIN_TIMEOUT_S=60
USER 10001:10001
EXPOSE 8000
# Liveness only (the process answers); readiness (/readyz) is the orchestrator's business. The start
# period covers model load and warm-up. python's urllib: no curl in the image, and none needed.
HEALTHCHECK --interval=30s --timeout=5s --start-period=180s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('CALOGAN_PORT', '8000'), timeout=4)"]
ENTRYPOINT ["calogan"]
CMD ["serve"]

# ------------------------------------------------------------------------- cpu (last: the default target)
FROM python:${PYTHON_VERSION}-slim-bookworm AS cpu-build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY deploy/requirements.py deploy/requirements.py
RUN python deploy/requirements.py > requirements.txt \
    && /opt/venv/bin/pip install --no-cache-dir -r requirements.txt
COPY app/ app/
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps .

FROM python:${PYTHON_VERSION}-slim-bookworm AS cpu
RUN groupadd --system --gid 10001 calogan \
    && useradd --system --uid 10001 --gid calogan --no-create-home --shell /usr/sbin/nologin calogan
COPY --from=cpu-build /opt/venv /opt/venv
WORKDIR /srv/calogan
COPY models/ models/
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    KERAS_HOME=/tmp/.keras \
    MPLCONFIGDIR=/tmp/matplotlib \
    TF_CPP_MIN_LOG_LEVEL=2 \
    CALOGAN_HOST=0.0.0.0 \
    CALOGAN_PORT=8000 \
    CALOGAN_MODEL_DIR=/srv/calogan/models/conv2d \
    CALOGAN_BACKEND=auto \
    CALOGAN_DEVICE=cpu \
    CALOGAN_TMP_DIR=/tmp \
    CALOGAN_MAX_BATCH_SIZE=256 \
    CALOGAN_MAX_QUEUE_DELAY_MS=2 \
    CALOGAN_DRAIN_TIMEOUT_S=60
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('CALOGAN_PORT', '8000'), timeout=4)"]
ENTRYPOINT ["calogan"]
CMD ["serve"]
