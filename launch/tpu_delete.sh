#!/usr/bin/env bash
# Delete a TPU VM slice (billing stops; the workers' disks, logs and venvs go with it; a workdir on the bucket stays).
#   TPU_NAME=seal ZONE=us-west4-a launch/tpu_delete.sh
# Variables: TPU_NAME, ZONE; optional PROJECT, DRY_RUN=1.
# shellcheck source=launch/common.sh
source "$(dirname "$0")/common.sh"
if want_help "$@"; then usage; fi
need TPU_NAME ZONE
tpu_flags
run gcloud compute tpus tpu-vm delete "$TPU_NAME" "${TPU_FLAGS[@]}" --quiet
