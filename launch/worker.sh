#!/usr/bin/env bash
# One host's side of a detached run. TPU workers run it over ssh (tpu_run.sh, tpu_evaluate.sh, tpu_logs.sh,
# tpu_status.sh, tpu_stop.sh); a GPU host runs it directly (gpu_run.sh, gpu_evaluate.sh). A started run
# survives the ssh session or terminal that started it (setsid + nohup, stdin from /dev/null) and writes one
# log per host.
#   launch/worker.sh start RUN CMD...  run CMD detached in the repository root (refused while RUN runs here)
#   launch/worker.sh status RUN        one line: "HOST RUN running pid N" | "HOST RUN exited RC" | "HOST RUN died"
#                                      (gone without an exit code: killed, preempted) | "HOST RUN not-started";
#                                      then the log's last 3 lines
#   launch/worker.sh logs RUN          the log's last TAIL lines (default 50); FOLLOW=1 keeps following it
#   launch/worker.sh stop RUN          SIGTERM to RUN's process group
# Variables: SEAL_JAX_LOGS (default ~/seal-jax-logs): RUN's files are SEAL_JAX_LOGS/RUN/HOST.{log,pid,exit};
#   WORKER_ID names HOST (default: worker-N from the TPU VM's agent-worker-number, else the host name);
#   SEAL_JAX_SECRETS (optional): a file of `export NAME=value` lines the run sources first (values never printed);
#   DRY_RUN=1 prints the command instead of starting it.
# shellcheck source=launch/common.sh
source "$(dirname "$0")/common.sh"
if want_help "$@"; then usage; fi
[ $# -ge 2 ] || die "usage: launch/worker.sh start|status|logs|stop RUN [CMD...] (see --help)"
action="$1" name="$2"
shift 2
[[ "$name" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*$ ]] || die "RUN=$name: use a plain name (letters, digits, . _ -)"

host_id() {  # worker-N on a TPU VM (the number jax.distributed reads from the same metadata key)
  if [ -n "${WORKER_ID:-}" ]; then echo "$WORKER_ID"; return; fi
  local n
  n="$(curl -sf -m 2 -H 'Metadata-Flavor: Google' \
    http://metadata.google.internal/computeMetadata/v1/instance/attributes/agent-worker-number 2>/dev/null)" || n=""
  if [[ "$n" =~ ^[0-9]+$ ]]; then echo "worker-$n"; else hostname -s; fi
}

host="$(host_id)"
dir="${SEAL_JAX_LOGS:-$HOME/seal-jax-logs}/$name"
log="$dir/$host.log" pidf="$dir/$host.pid" exitf="$dir/$host.exit"
alive() { [ ! -s "$exitf" ] && [ -s "$pidf" ] && kill -0 "$(cat "$pidf")" 2>/dev/null; }

case "$action" in
  start)
    [ $# -gt 0 ] || die "start $name: give the command to run"
    if alive; then die "$name is already running on $host (pid $(cat "$pidf")); stop it first: launch/worker.sh stop $name"; fi
    if [ -n "${SEAL_JAX_SECRETS:-}" ] && [ ! -f "$SEAL_JAX_SECRETS" ]; then
      die "SEAL_JAX_SECRETS=$SEAL_JAX_SECRETS does not exist"
    fi
    note "$host: $name, log $log"
    if dry; then run "$@"; exit 0; fi
    mkdir -p "$dir"
    rm -f "$exitf" "$pidf"
    cd "$REPO_ROOT" || exit 2
    echo "=== $(date -u +%FT%TZ) $host start: $(quote_all "$@")" >> "$log"
    # The session leader writes its own pid (setsid may fork), sources the secrets, runs CMD, records its status;
    # nohup leaves SIGHUP ignored (a dropped ssh does not reach it), setsid takes it out of the ssh session.
    # shellcheck disable=SC2016
    setsid nohup bash -c '
      echo $$ > "$1"; exitf="$2"; shift 2
      trap : TERM  # stop: CMD gets SIGTERM and ends; this shell outlives it to record the status
      if [ -n "${SEAL_JAX_SECRETS:-}" ]; then set -a; . "$SEAL_JAX_SECRETS"; set +a; fi
      "$@"; rc=$?
      echo "$rc" > "$exitf"; echo "=== $(date -u +%FT%TZ) exit $rc"; exit "$rc"' seal-jax-run "$pidf" "$exitf" "$@" \
      < /dev/null >> "$log" 2>&1 &
    for _ in $(seq 50); do [ -s "$pidf" ] && break; sleep 0.1; done
    echo "$host $name started pid $(cat "$pidf" 2>/dev/null || echo '?')"
    ;;
  status)
    if [ -s "$exitf" ]; then state="exited $(cat "$exitf")"
    elif alive; then state="running pid $(cat "$pidf")"
    elif [ -f "$pidf" ]; then state="died"
    else state="not-started"; fi
    echo "$host $name $state"
    if [ -f "$log" ]; then tail -n 3 "$log" | sed 's/^/    /'; fi
    ;;
  logs)
    [ -f "$log" ] || die "no log for $name on $host ($log): not started here"
    if [ "${FOLLOW:-0}" = "1" ]; then run tail -n "${TAIL:-50}" -F "$log"; else run tail -n "${TAIL:-50}" "$log"; fi
    ;;
  stop)
    if alive; then run kill -TERM -- "-$(cat "$pidf")"; else echo "$host $name not running"; fi
    ;;
  *) die "unknown action $action: start, status, logs or stop" ;;
esac
