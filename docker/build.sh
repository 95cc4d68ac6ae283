#!/usr/bin/env bash
# Build the bnnflow image (`make docker`) or prove it works (`make docker-selftest`).
#
#   docker/build.sh runtime     the image `$IMAGE` (default bnnflow)
#   docker/build.sh selftest    also build + simulate a shipped pruned model
#
# With a Docker engine: `docker build`; the selftest then runs the image with
# the data mounted (a Docker build step cannot mount a host folder).
# Without one: podman/buildah, installed with apt-get when missing and run as
# root. The selftest is then a build stage run with the data mounted at /data
# (`podman run` does not work on every host, a build step does). When the
# default base image cannot be pulled (no registry), a Debian bookworm base with
# Python 3.11 is made with debootstrap once and kept as $LOCAL_BASE.
#
# Environment (all optional):
#   IMAGE             tag of the runtime image (the selftest stage gets IMAGE:selftest)
#   BASE_IMAGE        base image (default: the Dockerfile's python:3.11-slim, else $LOCAL_BASE)
#   BNNFLOW_DATA_DIR  data sets for the selftest (default ../shared/data beside the checkout)
#   WHEELS_DIR        local wheel folder holding the CPU torch wheel (default: pip's
#                     find-links when it is a folder); mounted into the podman build
#   TORCH_INDEX_URL   extra index for torch (default: the Dockerfile's, or none with WHEELS_DIR)
#   SELFTEST_LIMIT    test images the selftest simulates (default 300)
set -euo pipefail

target=${1:?usage: docker/build.sh runtime|selftest}
case $target in runtime|selftest) ;; *) echo "docker/build.sh: unknown target '$target' (runtime|selftest)" >&2; exit 2 ;; esac
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-bnnflow}
DEFAULT_BASE=docker.io/library/python:3.11-slim
LOCAL_BASE=${LOCAL_BASE:-localhost/debian-py:bookworm}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SELFTEST_LIMIT=${SELFTEST_LIMIT:-300}
DATA_DIR=${BNNFLOW_DATA_DIR:-$(pwd)/../shared/data}

say() { echo "docker/build.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }

if [[ $target == selftest ]]; then
    [[ -d $DATA_DIR/mnist || -d $DATA_DIR/cifar10 ]] ||
        die "no data sets in '$DATA_DIR' (mnist/, cifar10/): set BNNFLOW_DATA_DIR to the data folder"
    DATA_DIR=$(cd "$DATA_DIR" && pwd)
fi

# A local wheel folder (this machine's pip find-links) supplies the CPU torch
# wheel, so the build asks nothing but PyPI.
if [[ -z ${WHEELS_DIR+x} ]]; then
    WHEELS_DIR=${PIP_FIND_LINKS:-$(python3 -m pip config get global.find-links 2>/dev/null || true)}
fi
[[ -n $WHEELS_DIR && -d $WHEELS_DIR ]] && compgen -G "$WHEELS_DIR/torch-*+cpu-*.whl" > /dev/null || WHEELS_DIR=

if docker info > /dev/null 2>&1; then
    args=(-t "$IMAGE" --target runtime)
    [[ -n ${BASE_IMAGE:-} ]] && args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
    [[ -n ${TORCH_INDEX_URL+x} ]] && args+=(--build-arg "TORCH_INDEX_URL=$TORCH_INDEX_URL")
    docker build "${args[@]}" .
    if [[ $target == selftest ]]; then
        docker run --rm -v "$DATA_DIR:/data:ro" --entrypoint python "$IMAGE" \
            /opt/bnnflow/docker/selftest.py --limit "$SELFTEST_LIMIT"
    fi
    exit 0
fi

if ! command -v podman > /dev/null; then
    [[ $(id -u) == 0 ]] && command -v apt-get > /dev/null ||
        die "no Docker engine answers and podman is missing: install docker or podman (and debootstrap)"
    say "no Docker engine: installing podman and debootstrap with apt-get"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman debootstrap > /dev/null
fi

if [[ -z ${BASE_IMAGE:-} ]]; then
    if podman image exists "$DEFAULT_BASE" || podman pull -q "$DEFAULT_BASE" > /dev/null 2>&1; then
        BASE_IMAGE=$DEFAULT_BASE
    else
        BASE_IMAGE=$LOCAL_BASE
        if ! podman image exists "$LOCAL_BASE"; then
            say "cannot pull $DEFAULT_BASE: making $LOCAL_BASE with debootstrap (about 2 min)"
            command -v debootstrap > /dev/null || die "debootstrap is missing: apt-get install debootstrap"
            rootfs=$(mktemp -d /var/tmp/debian-py.XXXXXX)
            trap 'rm -rf "$rootfs"' EXIT
            debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
                bookworm "$rootfs" "$DEBIAN_MIRROR" > "$rootfs.log" 2>&1 ||
                { tail -5 "$rootfs.log" >&2; die "debootstrap failed (full log: $rootfs.log)"; }
            tar -C "$rootfs" -c . | podman import -q - "$LOCAL_BASE" > /dev/null
            rm -rf "$rootfs" "$rootfs.log"
        fi
    fi
fi
say "base image $BASE_IMAGE"

args=(--isolation "${PODMAN_ISOLATION:-chroot}" --network host --build-arg "BASE_IMAGE=$BASE_IMAGE")
# pip inside the build trusts the host's CA bundle, as pip outside does
[[ -d /etc/ssl/certs ]] && args+=(-v /etc/ssl/certs:/etc/ssl/certs:ro)
if [[ -n $WHEELS_DIR ]]; then
    say "torch CPU wheel from $WHEELS_DIR"
    args+=(-v "$WHEELS_DIR:/wheels:ro" --build-arg WHEELS_DIR=/wheels
           --build-arg "TORCH_INDEX_URL=${TORCH_INDEX_URL-}")
elif [[ -n ${TORCH_INDEX_URL+x} ]]; then
    args+=(--build-arg "TORCH_INDEX_URL=$TORCH_INDEX_URL")
fi
podman build "${args[@]}" --target runtime -t "$IMAGE" .
if [[ $target == selftest ]]; then
    podman build "${args[@]}" -v "$DATA_DIR:/data:ro" --build-arg "SELFTEST_LIMIT=$SELFTEST_LIMIT" \
        --build-arg "SELFTEST_RUN=$(date +%s)" --target selftest -t "$IMAGE:selftest" .
fi
