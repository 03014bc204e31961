#!/usr/bin/env bash
# Train on every worker of a TPU VM slice, detached: the run survives a dropped ssh, each worker writes
# ~/seal-jax-logs/RUN/worker-N.log (follow with tpu_logs.sh, check with tpu_status.sh, stop with tpu_stop.sh),
# and HF_TOKEN / OPENAI_API_KEY are forwarded from this shell without being printed. The same command in the
# same WORKDIR resumes the run (tpu_resume.sh does it after a preemption).
#   TPU_NAME=seal ZONE=us-west4-a CONFIG=configs/knowledge.py:paper WORKDIR=/mnt/seal/knowledge \
#     launch/tpu_run.sh --config.rl.iterations=2
# Variables: TPU_NAME, ZONE, CONFIG, WORKDIR (a path every worker shares: the bucket mount or NFS, not gs://);
#   optional RUN (default train: the logs' name), PROJECT, REMOTE_DIR (default seal-jax), DRY_RUN=1.
# Arguments go to python -m seal_jax.cli.train (config overrides).
# shellcheck source=launch/common.sh
source "$(dirname "$0")/common.sh"
if want_help "$@"; then usage; fi
need TPU_NAME ZONE CONFIG WORKDIR
refuse_object_store WORKDIR "$WORKDIR"
case "$WORKDIR" in /*) ;; *) echo "warning: WORKDIR=$WORKDIR is on each worker's own disk: not shared by a multi-host slice, lost with the slice" >&2 ;; esac
tpu_start "${RUN:-train}" env SEAL_JAX_DISTRIBUTED=1 .venv/bin/python -m seal_jax.cli.train --config="$CONFIG" \
  --workdir="$WORKDIR" "$@"
