#!/usr/bin/env bash
# Copy this checkout to every worker of a TPU VM slice and install seal-jax there (launch/install.sh: a Python
# 3.11 venv, pip install -e '.[tpu]'); with BUCKET, also Cloud Storage FUSE and the bucket mounted at /mnt/seal
# on every worker (the place for WORKDIR and OUT: one filesystem for all workers, kept when the slice is gone).
#   TPU_NAME=seal ZONE=us-west4-a BUCKET=my-bucket launch/tpu_setup.sh
# Variables: TPU_NAME, ZONE; optional BUCKET, MOUNT (default /mnt/seal), DATA (then tpu_stage.sh runs too),
#   PROJECT, REMOTE_DIR (default seal-jax, in the ssh user's home), DRY_RUN=1.
# Only committed files are copied (git archive HEAD); it warns about uncommitted changes.
# shellcheck source=launch/common.sh
source "$(dirname "$0")/common.sh"
if want_help "$@"; then usage; fi
need TPU_NAME ZONE
if [ -n "$(git -C "$REPO_ROOT" status --porcelain)" ]; then
  echo "warning: uncommitted changes in $REPO_ROOT are NOT copied (git archive HEAD); commit them first" >&2
fi
tarball="${TMPDIR:-/tmp}/seal-jax-$$.tar.gz"
run git -C "$REPO_ROOT" archive --format=tar.gz -o "$tarball" HEAD
tpu_scp "$tarball" seal-jax.tar.gz
dry || rm -f "$tarball"
install_env="EXTRA=tpu"
if [ -n "${BUCKET:-}" ]; then install_env+=" BUCKET=$(quote "$BUCKET") MOUNT=$(quote "${MOUNT:-/mnt/seal}")"; fi
tpu_ssh all "mkdir -p $(quote "$REMOTE_DIR") && tar xzf seal-jax.tar.gz -C $(quote "$REMOTE_DIR") && cd $(quote "$REMOTE_DIR") && $install_env bash launch/install.sh"
if [ -n "${DATA:-}" ]; then "$LAUNCH_DIR/tpu_stage.sh"; fi
