#!/usr/bin/env bash
# Stage SEAL's knowledge files into this checkout's data/squad/, from a local directory or a gs:// folder
# (tpu_stage.sh runs it on every TPU worker for a gs:// DATA; on a GPU host run it, or gpu_setup.sh, directly):
#   squad_train.json  SEAL's RL passages        configs/knowledge.py:paper reads data/squad/squad_train.json
#   squad_val.json    SEAL's evaluation split   configs/knowledge*.py:paper read data/squad/squad_val.json
#   gpt4_1_val.json   SEAL's GPT-4.1 self-edits evaluate --config.eval.completions_file=data/squad/gpt4_1_val.json
# A file that is missing is reported (the presets then read SQuAD from the hub; Table 2's `file` row is skipped).
#   DATA=~/seal-data launch/stage.sh
#   DATA=gs://my-bucket/seal-data launch/stage.sh
# Variables: DATA (a directory or gs:// folder holding the files above); DRY_RUN=1.
# shellcheck source=launch/common.sh
source "$(dirname "$0")/common.sh"
if want_help "$@"; then usage; fi
need DATA
cd "$REPO_ROOT" || exit 2
dest="data/squad"
run mkdir -p "$dest"
for f in "${SEAL_FILES[@]}"; do
  case "$DATA" in
    gs://*) run gcloud storage cp "${DATA%/}/$f" "$dest/$f" || echo "warning: ${DATA%/}/$f: $(seal_file_missing "$f")" >&2 ;;
    *) if [ -f "$DATA/$f" ]; then run cp "$DATA/$f" "$dest/$f"; else echo "warning: $DATA/$f: $(seal_file_missing "$f")" >&2; fi ;;
  esac
done
dry || ls -l "$dest"
