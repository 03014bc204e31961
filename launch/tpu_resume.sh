#!/usr/bin/env bash
# Keep a spot (or preemptible) slice's training going until it ends. Every POLL seconds it reads the slice's
# state and worker 0's run: a slice that is PREEMPTED or gone is deleted, created again (CREATE_FLAGS), set up
# (tpu_setup.sh: checkout, venv, bucket mount, and with DATA the staged files) and the same train command is
# started again (tpu_run.sh); a READY slice whose run died (VM restarted, process killed) is set up and started
# again. train resumes in the same WORKDIR from its newest checkpoint, skipping every record already on disk,
# so WORKDIR must be on the bucket mount. It exits when worker 0's run exits, with its status. Run it where it
# stays up (a small VM, tmux); stopping it stops the watching, not the run.
#   TPU_NAME=seal ZONE=us-west4-a ACCELERATOR=v5litepod-8 BUCKET=my-bucket DATA=gs://my-bucket/seal-data \
#     CONFIG=configs/knowledge.py:paper WORKDIR=/mnt/seal/knowledge launch/tpu_resume.sh --config.rl.iterations=2
# Variables: TPU_NAME, ZONE, ACCELERATOR, BUCKET, CONFIG, WORKDIR (under MOUNT, default /mnt/seal); optional
#   DATA, CREATE_FLAGS (default --spot), POLL (seconds, default 300), MAX_RESTARTS (default 20), RUN (default
#   train), RUNTIME, PROJECT, REMOTE_DIR, DRY_RUN=1 (prints the commands of one recovery from PREEMPTED).
# Arguments go to python -m seal_jax.cli.train, as for tpu_run.sh.
# shellcheck source=launch/common.sh
source "$(dirname "$0")/common.sh"
if want_help "$@"; then usage; fi
need TPU_NAME ZONE ACCELERATOR BUCKET CONFIG WORKDIR
refuse_object_store WORKDIR "$WORKDIR"
mount="${MOUNT:-/mnt/seal}"
case "$WORKDIR" in "$mount"/*) ;; *) die "WORKDIR=$WORKDIR is not under the bucket mount $mount: a recreated slice would start over";; esac
runtime_for "$ACCELERATOR" > /dev/null
read -r -a create_flags <<< "${CREATE_FLAGS---spot}"
export RUN="${RUN:-train}"
tpu_flags

slice_state() {  # READY, PREEMPTED, CREATING, ... ; MISSING when the slice does not exist; UNKNOWN on other errors
  local out
  if out="$(gcloud compute tpus tpu-vm describe "$TPU_NAME" "${TPU_FLAGS[@]}" --format='value(state)' 2>&1)"; then
    echo "$out"
  elif [[ "$out" == *NOT_FOUND* || "$out" == *"not found"* ]]; then echo MISSING
  else echo UNKNOWN; fi
}
run_state() {  # worker 0's run: "running pid N", "exited RC", "died", "not-started"; empty when ssh fails
  gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${TPU_FLAGS[@]}" --worker=0 \
    --command="cd $(quote "$REMOTE_DIR") && bash launch/worker.sh status $(quote "$RUN")" 2> /dev/null \
    | awk -v r="$RUN" '$2 == r { $1 = ""; $2 = ""; sub(/^ +/, ""); print; exit }' || true
}
recover() {  # recover STATE ARGS...: bring the slice back and start the same train command
  local state="$1"; shift
  case "$state" in
    READY) ;;
    MISSING) "$LAUNCH_DIR/tpu_create.sh" "${create_flags[@]}" || return 1 ;;
    *) { "$LAUNCH_DIR/tpu_delete.sh" && "$LAUNCH_DIR/tpu_create.sh" "${create_flags[@]}"; } || return 1 ;;
  esac
  "$LAUNCH_DIR/tpu_setup.sh" || return 1
  "$LAUNCH_DIR/tpu_run.sh" "$@"
}

if dry; then
  echo "+ $(quote_all gcloud compute tpus tpu-vm describe "$TPU_NAME" "${TPU_FLAGS[@]}" --format='value(state)')"
  note "DRY_RUN: the recovery of a slice found PREEMPTED; the loop then reads worker 0's run every ${POLL:-300} s"
  recover PREEMPTED "$@"
  exit 0
fi
restarts=0
while true; do
  state="$(slice_state)" job=""
  if [ "$state" = READY ]; then job="$(run_state)"; fi
  note "$(date -u +%FT%TZ) slice $TPU_NAME: $state${job:+, worker 0 $RUN: $job}"
  case "$state:$job" in
    READY:running*|READY:) ;;
    READY:exited\ 0) note "$RUN finished"; exit 0 ;;
    READY:exited*)
      sleep 60  # a preempted peer fails worker 0 first: look at the slice again before calling it an error
      if [ "$(slice_state)" = READY ]; then echo "error: $RUN $job on worker 0 (launch/tpu_logs.sh shows why)" >&2; exit "${job#exited }"; fi ;;
    READY:died|READY:not-started|PREEMPTED:*|TERMINATED:*|STOPPED:*|MISSING:*)
      restarts=$((restarts + 1))
      [ "$restarts" -le "${MAX_RESTARTS:-20}" ] || die "gave up after ${MAX_RESTARTS:-20} restarts"
      recover "$state" "$@" || note "recovery failed (no spot capacity?); trying again in ${POLL:-300} s" ;;
    *) ;;  # CREATING, STARTING, REPAIRING, UNKNOWN...: wait
  esac
  sleep "${POLL:-300}"
done
