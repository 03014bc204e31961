# Shared helpers for the launch scripts (sourced, never run). Every command goes through `run`, which prints it
# first ("+ cmd", shell-quoted so it can be pasted); DRY_RUN=1 prints every command and runs none.
# Secrets (HF_TOKEN, OPENAI_API_KEY) never appear in a printed command: scripts print `secrets_line`
# (HF_TOKEN=<set> / <unset>) and move the values in files (TPU: a 0600 file in a 0700 directory on every worker).
# shellcheck shell=bash
set -euo pipefail

SECRET_VARS=(HF_TOKEN OPENAI_API_KEY)  # forwarded from the caller's environment to every run, values never shown
LAUNCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$LAUNCH_DIR/.." && pwd)"
REMOTE_DIR="${REMOTE_DIR:-seal-jax}"         # the checkout on every TPU worker, relative to the ssh user's home
REMOTE_SECRETS=".seal-jax/secrets.env"       # on every TPU worker, relative to home; sourced by launch/worker.sh
# SEAL's knowledge files, staged into data/squad/ (configs/knowledge*.py:paper read them from there)
# shellcheck disable=SC2034  # used by the scripts that source this file
SEAL_FILES=(squad_train.json squad_val.json gpt4_1_val.json)
seal_file_missing() {  # what a run does without the file
  case "$1" in
    squad_train.json) echo "not found: configs/knowledge.py:paper will read rajpurkar/squad:train from the hub" ;;
    squad_val.json) echo "not found: the knowledge :paper presets will read rajpurkar/squad:validation from the hub" ;;
    *) echo "not found: evaluate skips Table 2's file condition (SEAL's GPT-4.1 self-edits)" ;;
  esac
}

die() { echo "error: $*" >&2; exit 2; }
need() { for v in "$@"; do [ -n "${!v:-}" ] || die "set $v (see --help)"; done; }
want_help() { for a in "$@"; do { [ "$a" = "--help" ] || [ "$a" = "-h" ]; } && return 0; done; return 1; }
usage() { awk 'NR > 1 && /^(#SBATCH|# shellcheck)/ { next } NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0; }
dry() { [ "${DRY_RUN:-0}" = "1" ]; }
note() { echo "# $*"; }

# One word as a POSIX shell would read it back: bare when safe, else single-quoted.
quote() {
  if [[ "$1" =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then printf '%s' "$1"
  else printf "'%s'" "${1//\'/\'\\\'\'}"; fi
}
quote_all() { local out="" a; for a in "$@"; do out+="${out:+ }$(quote "$a")"; done; printf '%s' "$out"; }

run() {
  echo "+ $(quote_all "$@")"
  dry || "$@"
}

# Which secrets are forwarded, never their values: "HF_TOKEN=<set> OPENAI_API_KEY=<unset>".
secrets_line() {
  local v out=""
  for v in "${SECRET_VARS[@]}"; do out+="${out:+ }$v=$([ -n "${!v:-}" ] && echo '<set>' || echo '<unset>')"; done
  echo "$out"
}

# Write `export NAME=value` lines for the set secrets to FILE, created 0600 (printf is a builtin: no value is
# ever on a process's command line).
write_secrets() {
  local file="$1" v
  (umask 077 && : > "$file")
  for v in "${SECRET_VARS[@]}"; do
    if [ -n "${!v:-}" ]; then printf 'export %s=%q\n' "$v" "${!v}" >> "$file"; fi
  done
}

# The TPU software version for an accelerator type, from Google's table "TPU software versions"
# (https://cloud.google.com/tpu/docs/runtimes, "PyTorch and JAX": Trillium (v6e) v2-alpha-tpuv6e, v5p
# v2-alpha-tpuv5, v5e v2-alpha-tpuv5-lite, v4 and older tpu-ubuntu2204-base).
runtime_for() {
  case "$1" in
    v6e-*) echo v2-alpha-tpuv6e ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v5litepod-*) echo v2-alpha-tpuv5-lite ;;
    v2-*|v3-*|v4-*) echo tpu-ubuntu2204-base ;;
    v5e-*) die "ACCELERATOR=$1: Cloud TPU names v5e slices v5litepod-N (e.g. v5litepod-8)" ;;
    *) die "ACCELERATOR=$1: unknown TPU type; use v4-N, v5litepod-N, v5p-N or v6e-N, or set RUNTIME" ;;
  esac
}

# gcloud's TPU VM commands for TPU_NAME in ZONE (PROJECT optional).
tpu_flags() { TPU_FLAGS=(--zone="$ZONE"); if [ -n "${PROJECT:-}" ]; then TPU_FLAGS+=(--project="$PROJECT"); fi; }
tpu_ssh() {  # tpu_ssh WORKER COMMAND: COMMAND in the shell of worker WORKER (a number, or all)
  tpu_flags
  run gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${TPU_FLAGS[@]}" --worker="$1" --command="$2"
}
tpu_scp() {  # tpu_scp SRC... DEST: DEST is relative to the home directory of every worker
  tpu_flags
  local dest="${*: -1}"
  run gcloud compute tpus tpu-vm scp "${@:1:$#-1}" "$TPU_NAME:$dest" "${TPU_FLAGS[@]}" --worker=all
}

# Forward the caller's secrets to every worker: a local 0600 temp file copied into a 0700 directory, where
# launch/worker.sh sources it for the run. The file is rewritten at every launch (an unset secret is dropped).
tpu_forward_secrets() {
  note "secrets: $(secrets_line) -> ~/$REMOTE_SECRETS (0600) on every worker"
  tpu_ssh all "install -d -m 700 ~/.seal-jax && install -m 600 /dev/null ~/$REMOTE_SECRETS"
  if dry; then tpu_scp "<0600 temp file>" "$REMOTE_SECRETS"; return; fi
  SECRETS_TMP="$(mktemp)"
  trap 'rm -f "$SECRETS_TMP"' EXIT  # also when interrupted
  write_secrets "$SECRETS_TMP"
  tpu_scp "$SECRETS_TMP" "$REMOTE_SECRETS"
  rm -f "$SECRETS_TMP"
}

# Start RUN detached on every worker: tpu_start RUN CMD... (CMD runs in REMOTE_DIR, secrets sourced first).
tpu_start() {
  local name="$1"; shift
  tpu_forward_secrets
  tpu_ssh all "cd $(quote "$REMOTE_DIR") && SEAL_JAX_SECRETS=~/$REMOTE_SECRETS bash launch/worker.sh start $(quote "$name") $(quote_all "$@")"
  note "detached on every worker; follow: TPU_NAME=$TPU_NAME ZONE=$ZONE RUN=$name launch/tpu_logs.sh"
}

refuse_object_store() {  # the workdir / output must be a mounted path on every host
  case "$2" in *://*) die "$1=$2: mount the bucket on every host (tpu_setup.sh BUCKET=..., mounted at /mnt/seal) and pass the mounted path, e.g. $1=/mnt/seal/run1";; esac
}

# Start RUN detached on this GPU host: gpu_start RUN MODULE ARGS... (python -m MODULE in the repository root; the
# run inherits this shell's environment, secrets included). COORDINATOR, NUM_PROCESSES and PROCESS_ID make it one
# process of a multi-host run without SLURM (start it on every host).
gpu_start() {
  local name="$1" module="$2"; shift 2
  [ -z "${SLURM_PROCID:-}" ] || die "inside an srun step: submit launch/gpu_slurm.sh with sbatch instead"
  local py="${PYTHON:-}"
  if [ -z "$py" ]; then if [ -x "$REPO_ROOT/.venv/bin/python" ]; then py=.venv/bin/python; else py=python3; fi; fi
  local env=(env XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}")
  if [ -n "${COORDINATOR:-}" ]; then
    need NUM_PROCESSES PROCESS_ID
    env+=(JAX_COORDINATOR_ADDRESS="$COORDINATOR" JAX_NUM_PROCESSES="$NUM_PROCESSES" JAX_PROCESS_ID="$PROCESS_ID")
  fi
  note "secrets: $(secrets_line) (the run inherits them from this shell)"
  WORKER_ID="${WORKER_ID:-$(hostname -s)}" "$LAUNCH_DIR/worker.sh" start "$name" "${env[@]}" "$py" -m "$module" "$@"
  note "follow: launch/worker.sh logs $name (FOLLOW=1 keeps following); launch/worker.sh status $name"
}
