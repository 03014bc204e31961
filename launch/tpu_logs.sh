#!/usr/bin/env bash
# Follow a detached run's log on a TPU worker (worker 0 prints the progress; the others print warnings).
#   TPU_NAME=seal ZONE=us-west4-a launch/tpu_logs.sh                  # follow train on worker 0 (Ctrl-C stops)
#   TPU_NAME=seal ZONE=us-west4-a RUN=evaluate WORKER=all FOLLOW=0 launch/tpu_logs.sh
# Variables: TPU_NAME, ZONE; optional RUN (default train), WORKER (default 0; a number or all), FOLLOW (default 1),
#   TAIL (lines, default 50), PROJECT, REMOTE_DIR (default seal-jax), DRY_RUN=1.
# shellcheck source=launch/common.sh
source "$(dirname "$0")/common.sh"
if want_help "$@"; then usage; fi
need TPU_NAME ZONE
tpu_ssh "${WORKER:-0}" "cd $(quote "$REMOTE_DIR") && FOLLOW=$(quote "${FOLLOW:-1}") TAIL=$(quote "${TAIL:-50}") bash launch/worker.sh logs $(quote "${RUN:-train}")"
