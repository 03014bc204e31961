#!/usr/bin/env bash
# Evaluate on this host's GPUs, detached, on the mesh the config names (as train): results in OUT/eval.json.
# Logs, secrets and launch/worker.sh logs|status|stop RUN as for gpu_run.sh (RUN default evaluate).
#   CONFIG=configs/knowledge_eval.py:paper OUT=runs/table2 launch/gpu_evaluate.sh \
#     --config.generator_workdir=runs/knowledge --config.eval.completions_file=data/squad/gpt4_1_val.json
# Variables: CONFIG, OUT; optional RUN (default evaluate), PYTHON, COORDINATOR, NUM_PROCESSES, PROCESS_ID,
#   XLA_PYTHON_CLIENT_MEM_FRACTION (default 0.9), SEAL_JAX_LOGS, DRY_RUN=1.
# Arguments go to python -m seal_jax.cli.evaluate (config overrides).
# shellcheck source=launch/common.sh
source "$(dirname "$0")/common.sh"
if want_help "$@"; then usage; fi
need CONFIG OUT
refuse_object_store OUT "$OUT"
gpu_start "${RUN:-evaluate}" seal_jax.cli.evaluate --config="$CONFIG" --out="$OUT" "$@"
