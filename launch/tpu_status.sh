#!/usr/bin/env bash
# The slice's state (READY, PREEMPTED, ...) and a detached run's state on every worker: running, exited RC, died
# (gone without an exit code), or not-started, with its log's last lines.
#   TPU_NAME=seal ZONE=us-west4-a launch/tpu_status.sh
# Variables: TPU_NAME, ZONE; optional RUN (default train), PROJECT, REMOTE_DIR (default seal-jax), DRY_RUN=1.
# shellcheck source=launch/common.sh
source "$(dirname "$0")/common.sh"
if want_help "$@"; then usage; fi
need TPU_NAME ZONE
tpu_flags
run gcloud compute tpus tpu-vm describe "$TPU_NAME" "${TPU_FLAGS[@]}" --format='value(state,health,acceleratorType)'
tpu_ssh all "cd $(quote "$REMOTE_DIR") && bash launch/worker.sh status $(quote "${RUN:-train}")"
