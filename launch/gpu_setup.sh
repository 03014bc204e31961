#!/usr/bin/env bash
# Set up this GPU host (1-8 NVIDIA GPUs): launch/install.sh with the CUDA 12 extra (a Python 3.11 venv in .venv,
# pip install -e '.[cuda12]'), then a check that JAX sees the GPUs; with DATA, SEAL's files staged into
# data/squad/ (launch/stage.sh). Under SLURM run it once on a login or compute node of the shared filesystem.
#   launch/gpu_setup.sh
#   DATA=~/seal-data launch/gpu_setup.sh
# Variables: optional DATA (a directory or gs:// folder), EXTRA (default cuda12), PYTHON, DRY_RUN=1.
# shellcheck source=launch/common.sh
source "$(dirname "$0")/common.sh"
if want_help "$@"; then usage; fi
EXTRA="${EXTRA:-cuda12}" CHECK_GPU="${CHECK_GPU:-1}" "$LAUNCH_DIR/install.sh"
if [ -n "${DATA:-}" ]; then "$LAUNCH_DIR/stage.sh"; fi
