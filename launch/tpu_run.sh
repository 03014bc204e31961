#!/usr/bin/env bash
# Run seal_jax.train on every worker of a TPU VM (always --worker=all: every host runs the same program).
#   TPU_NAME=seal ZONE=us-central2-b CONFIG=configs/knowledge.py:paper WORKDIR=gs://bucket/run1 \
#     launch/tpu_run.sh --config.rl.iterations=2 --config.mesh.fsdp=4
# Variables: TPU_NAME, ZONE, CONFIG, WORKDIR, PROJECT (optional), REMOTE_DIR (default seal-jax),
# MODULE (default seal_jax.train). Arguments are passed through as config overrides.
source "$(dirname "$0")/common.sh"
if want_help "$@"; then sed -n '2,6p' "$0"; exit 0; fi
need TPU_NAME ZONE CONFIG WORKDIR
dir="${REMOTE_DIR:-seal-jax}"
args=$(printf ' %q' "$@")
run gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all ${PROJECT:+--project="$PROJECT"} \
  --command="cd $dir && python3 -m ${MODULE:-seal_jax.train} --config=$CONFIG --workdir=$WORKDIR$args"
