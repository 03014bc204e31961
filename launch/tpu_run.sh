#!/usr/bin/env bash
# Run seal_jax.cli.train on every worker of a TPU VM (always --worker=all: every host runs the same program).
#   TPU_NAME=seal ZONE=us-central2-b CONFIG=configs/knowledge.py:paper WORKDIR=/mnt/seal/run1 \
#     launch/tpu_run.sh --config.rl.iterations=2 --config.mesh.fsdp=4
# Variables: TPU_NAME, ZONE, CONFIG, WORKDIR, PROJECT (optional), REMOTE_DIR (default seal-jax),
# MODULE (default seal_jax.cli.train). Arguments are passed through as config overrides. WORKDIR must be the same
# shared filesystem on every worker (a bucket mounted by tpu_setup.sh's BUCKET, or NFS), not a gs:// URI.
source "$(dirname "$0")/common.sh"
if want_help "$@"; then usage; fi
need TPU_NAME ZONE CONFIG WORKDIR
dir="${REMOTE_DIR:-seal-jax}"
args=$(printf ' %q' "$@")
run gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all ${PROJECT:+--project="$PROJECT"} \
  --command="cd $dir && SEAL_JAX_DISTRIBUTED=1 python3 -m ${MODULE:-seal_jax.cli.train} --config=$CONFIG --workdir=$WORKDIR$args"
