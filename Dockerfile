# bnnflow: train, prune, compile and simulate binary neural networks (W1A1).
#
#   docker build -t bnnflow .                      # runtime image (CPU only)
#   docker run --rm bnnflow --help                  # the entry point is `bnnflow`
#   docker run --rm -v /path/to/data:/data -v "$PWD/out:/out" bnnflow \
#       build /opt/bnnflow/models/zoo/cnv_w1a1_fit.pt --board Pynq-Z1 --target-fps 1000 --out /out/cnv
#   docker run --rm -v /path/to/data:/data -v "$PWD/out:/out" bnnflow sim /out/cnv --json
#
# Stages: `runtime` (the default, last but one) and `selftest`, which builds
# and simulates a shipped pruned model during the image build and fails the
# build when the simulator disagrees with FINN or PyTorch. The selftest needs
# the data sets mounted at /data while it builds (podman/buildah:
# `-v /path/to/data:/data:ro`); `make docker-selftest` does that.
# See docker/README-section.md for mounts, Vivado and the build arguments.

ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS runtime

# torch==2.13.0 on PyPI is a multi-GB CUDA build for Linux; the CPU wheel of the
# same version comes from PyTorch's CPU index. Builders that already hold the
# CPU wheel locally set TORCH_INDEX_URL="" and WHEELS_DIR to a directory mounted
# into the build (podman build -v DIR:DIR:ro), so nothing but PyPI is asked.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG WHEELS_DIR=

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    BNNFLOW_DATA_DIR=/data \
    BNNFLOW_CACHE_DIR=/cache \
    NUMBA_CACHE_DIR=/cache/numba \
    MPLCONFIGDIR=/cache/matplotlib

# Verilator (and the C++ compiler it drives) for `bnnflow sim DIR --rtl`, the RTL co-simulation.
RUN apt-get update \
 && apt-get install -y --no-install-recommends verilator g++ make \
 && rm -rf /var/lib/apt/lists/*

RUN python3 -m venv /opt/venv \
 && python -m pip install -q --upgrade "pip>=24" \
 && mkdir -p -m 1777 /data /cache /out

# The same pinned set as `make venv`; finn-plus alone with --no-deps (its own
# pins clash with the CPU torch wheel). This layer is the slow one (~1.6 GB).
COPY requirements.lock /opt/bnnflow/requirements.lock
RUN python -m pip install -q \
        ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} \
        ${WHEELS_DIR:+--find-links "$WHEELS_DIR"} \
        -r /opt/bnnflow/requirements.lock \
 && python -m pip install -q --no-deps finn-plus==1.6.1 \
 && python -c "import torch, sys; print('torch', torch.__version__); \
sys.exit('a CUDA build of torch was installed: pass the CPU wheel (see Dockerfile)' if torch.version.cuda else 0)"

# The project itself, editable so that the shipped checkpoints stay at
# /opt/bnnflow/models/zoo beside the code that finds them.
COPY . /opt/bnnflow
RUN python -m pip install -q --no-deps --no-build-isolation -e /opt/bnnflow \
 && bnnflow --help > /dev/null \
 && chmod -R a+rX /opt/bnnflow

WORKDIR /out
ENTRYPOINT ["bnnflow"]
CMD ["--help"]


FROM runtime AS selftest
# Vivado-free build + bit-exact simulation of the shipped pruned model on the
# first SELFTEST_LIMIT test images; the data sets must be mounted at /data.
# Scratch (build folder, decoded data, compiled kernels) is removed in the same
# step, so no data set enters the image; the verdict stays in selftest.json.
ARG SELFTEST_LIMIT=300
# `make docker-selftest` sets this to the time, so the check runs again on
# every call even when the image's layers come from the cache
ARG SELFTEST_RUN=
RUN BNNFLOW_CACHE_DIR=/tmp/selftest-cache NUMBA_CACHE_DIR=/tmp/selftest-cache/numba \
    python /opt/bnnflow/docker/selftest.py --limit "$SELFTEST_LIMIT" \
        --report /opt/bnnflow/selftest.json \
 ; rc=$? ; rm -rf /tmp/selftest-cache ; exit $rc
