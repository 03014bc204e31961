#!/usr/bin/env bash
# Create a TPU VM slice (single- or multi-host) with the TPU software version its generation needs.
#   TPU_NAME=seal ZONE=us-west4-a ACCELERATOR=v5litepod-8 launch/tpu_create.sh
#   TPU_NAME=seal ZONE=us-east5-b ACCELERATOR=v6e-8 launch/tpu_create.sh --spot   # preemptible: tpu_resume.sh
# Variables: TPU_NAME, ZONE, ACCELERATOR (v4-8, v4-32, v5litepod-8, v5litepod-16, v5p-8, v6e-8, ...); optional
#   RUNTIME (default from ACCELERATOR: v4 and older tpu-ubuntu2204-base, v5e (v5litepod-N) v2-alpha-tpuv5-lite,
#   v5p v2-alpha-tpuv5, v6e v2-alpha-tpuv6e; https://cloud.google.com/tpu/docs/runtimes), PROJECT, DRY_RUN=1.
# Extra arguments (--spot, --preemptible, --network=..., --data-disk=...) go to `gcloud compute tpus tpu-vm create`.
# shellcheck source=launch/common.sh
source "$(dirname "$0")/common.sh"
if want_help "$@"; then usage; fi
need TPU_NAME ZONE ACCELERATOR
runtime="${RUNTIME:-$(runtime_for "$ACCELERATOR")}"
note "TPU software version $runtime for $ACCELERATOR"
tpu_flags
run gcloud compute tpus tpu-vm create "$TPU_NAME" "${TPU_FLAGS[@]}" --accelerator-type="$ACCELERATOR" \
  --version="$runtime" "$@"
