#!/usr/bin/env bash
# Evaluate on every worker of a TPU VM slice, detached, on the mesh the config names (as train): SEAL's Table 2
# (knowledge_eval.py) or ARC's Table 1 (arc_eval.py), results in OUT/eval.json. Logs, secrets and
# tpu_logs.sh / tpu_status.sh / tpu_stop.sh as for tpu_run.sh (RUN default evaluate).
#   TPU_NAME=seal ZONE=us-west4-a CONFIG=configs/knowledge_eval.py:paper OUT=/mnt/seal/table2 \
#     launch/tpu_evaluate.sh --config.generator_workdir=/mnt/seal/knowledge \
#     --config.eval.completions_file=data/squad/gpt4_1_val.json
# Variables: TPU_NAME, ZONE, CONFIG, OUT (a path every worker shares, not gs://); optional RUN (default evaluate),
#   PROJECT, REMOTE_DIR (default seal-jax), DRY_RUN=1.
# Arguments go to python -m seal_jax.cli.evaluate (config overrides).
# shellcheck source=launch/common.sh
source "$(dirname "$0")/common.sh"
if want_help "$@"; then usage; fi
need TPU_NAME ZONE CONFIG OUT
refuse_object_store OUT "$OUT"
tpu_start "${RUN:-evaluate}" env SEAL_JAX_DISTRIBUTED=1 .venv/bin/python -m seal_jax.cli.evaluate --config="$CONFIG" \
  --out="$OUT" "$@"
