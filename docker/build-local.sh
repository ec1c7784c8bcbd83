#!/usr/bin/env bash
# Build the BIDS-App image without a Docker engine and without pulling a base image:
#
#   1. mmdebstrap makes a Debian bookworm root filesystem from the package mirror, with
#      what docker/Dockerfile expects of python:3.11-slim-bookworm (Python 3.11, pip,
#      venv, CA certificates; pip allowed to install into the system Python);
#   2. podman imports it as a local base image;
#   3. podman builds docker/Dockerfile on it (BASE_IMAGE=<that image>, chroot isolation).
#
# Run as root from anywhere (the build context is the repository root):
#
#   sudo bash docker/build-local.sh
#
# Options (environment variables):
#   IMAGE        tag of the image              (default mvpa-flows/mvpa_flows:<version>)
#   BASE_TAR     base root filesystem tarball; reused when it exists, made otherwise
#                                              (default $TMPDIR/mvpa-flows-bookworm.tar)
#   STORAGE_ROOT podman/buildah storage folder (default: the system's, /var/lib/containers)
#   MIRROR       Debian mirror                 (default http://deb.debian.org/debian)
#
# With STORAGE_ROOT, pass the same `--root` to buildah/podman to use the image, e.g.
#   buildah --root "$STORAGE_ROOT/root" --runroot "$STORAGE_ROOT/run" images
# The host's /etc/ssl/certs is mounted into every build step, so pip and apt work behind
# a TLS-intercepting proxy whose CA only the host trusts; nothing of it stays in the image.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
version=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$repo/mvpa_flows/__about__.py")
IMAGE=${IMAGE:-mvpa-flows/mvpa_flows:$version}
BASE_TAR=${BASE_TAR:-${TMPDIR:-/tmp}/mvpa-flows-bookworm.tar}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
base_image=localhost/mvpa-flows-base:bookworm

for tool in mmdebstrap podman; do
    command -v "$tool" >/dev/null || {
        echo "build-local.sh: $tool is missing; install it: apt-get install mmdebstrap podman" >&2
        exit 1
    }
done
if [ "$(id -u)" != 0 ]; then
    echo "build-local.sh: run as root (mmdebstrap and podman's chroot isolation need it)" >&2
    exit 1
fi

podman=(podman)
if [ -n "${STORAGE_ROOT:-}" ]; then
    podman+=(--root "$STORAGE_ROOT/root" --runroot "$STORAGE_ROOT/run")
fi

step() { printf '[build-local %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

if [ ! -s "$BASE_TAR" ]; then
    step "base root filesystem: Debian bookworm from $MIRROR -> $BASE_TAR"
    mkdir -p "$(dirname "$BASE_TAR")"
    # python:3.11-slim lets pip install into the system Python: drop Debian's marker.
    nice -n 10 mmdebstrap --quiet --variant=apt --format=tar \
        --include=python3,python3-pip,python3-venv,python-is-python3,ca-certificates \
        --customize-hook='rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED' \
        --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
        bookworm "$BASE_TAR.part" \
        "deb $MIRROR bookworm main" \
        "deb $MIRROR bookworm-updates main" \
        "deb ${MIRROR%/debian}/debian-security bookworm-security main"
    mv "$BASE_TAR.part" "$BASE_TAR"
else
    step "base root filesystem: reusing $BASE_TAR"
fi

step "import $BASE_TAR as $base_image"
"${podman[@]}" import --quiet \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    "$BASE_TAR" "$base_image" >/dev/null

step "podman build -f docker/Dockerfile -t $IMAGE"
vcs_ref=$(git -C "$repo" rev-parse HEAD 2>/dev/null || echo unknown)
nice -n 10 "${podman[@]}" build --isolation chroot --layers=false \
    -v /etc/ssl/certs:/etc/ssl/certs:ro \
    --ignorefile "$repo/docker/Dockerfile.dockerignore" \
    --build-arg BASE_IMAGE="$base_image" \
    --build-arg VCS_REF="$vcs_ref" \
    -f "$repo/docker/Dockerfile" -t "$IMAGE" "$repo"
step "built $IMAGE ($("${podman[@]}" image inspect --format '{{.Size}}' "$IMAGE") bytes)"
