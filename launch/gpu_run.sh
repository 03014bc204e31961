#!/usr/bin/env bash
# Train on this host's GPUs (all that JAX sees: 1-8), detached: the run survives the terminal or ssh session,
# logs to ~/seal-jax-logs/RUN/HOST.log (launch/worker.sh logs|status|stop RUN), and inherits HF_TOKEN /
# OPENAI_API_KEY from this shell without printing them. The same command in the same WORKDIR resumes the run.
#   CONFIG=configs/arc.py:paper WORKDIR=runs/arc launch/gpu_run.sh
#   CONFIG=configs/knowledge.py:paper WORKDIR=runs/knowledge launch/gpu_run.sh --config.mesh.fsdp=1
# Several hosts without SLURM: start it on every host with COORDINATOR=host0:1234 NUM_PROCESSES=N PROCESS_ID=i
# (WORKDIR on a filesystem all hosts share). Under SLURM use launch/gpu_slurm.sh.
# Variables: CONFIG, WORKDIR; optional RUN (default train), PYTHON (default .venv/bin/python), COORDINATOR,
#   NUM_PROCESSES, PROCESS_ID, XLA_PYTHON_CLIENT_MEM_FRACTION (default 0.9), SEAL_JAX_LOGS, DRY_RUN=1.
# Arguments go to python -m seal_jax.cli.train (config overrides).
# shellcheck source=launch/common.sh
source "$(dirname "$0")/common.sh"
if want_help "$@"; then usage; fi
need CONFIG WORKDIR
refuse_object_store WORKDIR "$WORKDIR"
gpu_start "${RUN:-train}" seal_jax.cli.train --config="$CONFIG" --workdir="$WORKDIR" "$@"
