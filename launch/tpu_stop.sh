#!/usr/bin/env bash
# Stop a detached run on every worker (SIGTERM to its process group). A train run stopped this way resumes
# from its last checkpoint when tpu_run.sh is run again with the same command and WORKDIR.
#   TPU_NAME=seal ZONE=us-west4-a launch/tpu_stop.sh
# Variables: TPU_NAME, ZONE; optional RUN (default train), PROJECT, REMOTE_DIR (default seal-jax), DRY_RUN=1.
# shellcheck source=launch/common.sh
source "$(dirname "$0")/common.sh"
if want_help "$@"; then usage; fi
need TPU_NAME ZONE
tpu_ssh all "cd $(quote "$REMOTE_DIR") && bash launch/worker.sh stop $(quote "${RUN:-train}")"
