#!/usr/bin/env bash
#SBATCH --job-name=seal-jax
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --output=seal-jax-%j.out
# Train (or evaluate) on SLURM GPU nodes with srun: one process per node driving all of its GPUs.
# jax.distributed.initialize() (SEAL_JAX_DISTRIBUTED=1, read by seal_jax.runtime.sharding.initialize) takes the
# coordinator, process count and process id from SLURM's variables; JAX_LOCAL_DEVICE_IDS hands each process all
# its node's GPUs (JAX's SLURM default is one GPU per process). Submit from the repository root:
#   CONFIG=configs/knowledge.py:paper WORKDIR=/shared/runs/knowledge sbatch --nodes=2 launch/gpu_slurm.sh
#   CMD=evaluate CONFIG=configs/knowledge_eval.py:paper OUT=/shared/runs/table2 sbatch launch/gpu_slurm.sh \
#     --config.generator_workdir=/shared/runs/knowledge
# sbatch hands this shell's environment (HF_TOKEN, OPENAI_API_KEY included) to the job; nothing prints them.
# Logs: SEAL_JAX_LOGS/slurm-JOBID/task-N.log, one per node, beside sbatch's seal-jax-JOBID.out. Resubmitting
# the same command resumes a train run in the same WORKDIR (sbatch --requeue does it after a preemption).
# Variables: CONFIG, and WORKDIR (CMD=train, the default) or OUT (CMD=evaluate), on a filesystem every node
#   shares; optional PYTHON (default .venv/bin/python), SEAL_JAX_LOGS (default ~/seal-jax-logs), GPUS_PER_NODE
#   (default SLURM_GPUS_ON_NODE), DRY_RUN=1 (bash launch/gpu_slurm.sh prints the srun command).
# Arguments go to python -m seal_jax.cli.CMD (config overrides).
here="$(dirname "$0")"
if [ -n "${SLURM_SUBMIT_DIR:-}" ] && [ -f "$SLURM_SUBMIT_DIR/launch/common.sh" ]; then
  here="$SLURM_SUBMIT_DIR/launch"  # sbatch runs a copy of this file from its spool directory
fi
# shellcheck source=launch/common.sh
source "$here/common.sh"
if want_help "$@"; then usage; fi
cmd="${CMD:-train}"
case "$cmd" in
  train) need CONFIG WORKDIR; refuse_object_store WORKDIR "$WORKDIR"; target=(--workdir="$WORKDIR") ;;
  evaluate) need CONFIG OUT; refuse_object_store OUT "$OUT"; target=(--out="$OUT") ;;
  *) die "CMD=$cmd: train or evaluate" ;;
esac
cd "$REPO_ROOT" || exit 2
py="${PYTHON:-}"
if [ -z "$py" ]; then if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi; fi
gpus="${GPUS_PER_NODE:-${SLURM_GPUS_ON_NODE:-}}"
if [ -z "$gpus" ]; then if dry; then gpus=8; else die "SLURM_GPUS_ON_NODE is not set: submit with --gpus-per-node=G, or set GPUS_PER_NODE"; fi; fi
logs="${SEAL_JAX_LOGS:-$HOME/seal-jax-logs}/slurm-${SLURM_JOB_ID:-JOBID}"
note "secrets: $(secrets_line) (from the submitting shell's environment)"
run mkdir -p "$logs"
run srun --kill-on-bad-exit=1 --ntasks-per-node=1 --output="$logs/task-%t.log" \
  env SEAL_JAX_DISTRIBUTED=1 JAX_LOCAL_DEVICE_IDS="$(seq -s, 0 $((gpus - 1)))" \
  XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}" \
  "$py" -m "seal_jax.cli.$cmd" --config="$CONFIG" "${target[@]}" "$@"
