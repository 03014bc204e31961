#!/usr/bin/env bash
# Create a TPU VM (any accelerator type; multi-host slices included).
#   TPU_NAME=seal ZONE=us-central2-b ACCELERATOR=v4-8 launch/tpu_create.sh [--spot]
# Variables: TPU_NAME, ZONE, ACCELERATOR (v4-8, v5litepod-8, v4-32, ...), RUNTIME (default tpu-ubuntu2204-base),
# PROJECT (optional, else gcloud's default). Extra flags go to `gcloud compute tpus tpu-vm create`.
source "$(dirname "$0")/common.sh"
if want_help "$@"; then usage; fi
need TPU_NAME ZONE ACCELERATOR
run gcloud compute tpus tpu-vm create "$TPU_NAME" --zone="$ZONE" --accelerator-type="$ACCELERATOR" \
  --version="${RUNTIME:-tpu-ubuntu2204-base}" ${PROJECT:+--project="$PROJECT"} "$@"
