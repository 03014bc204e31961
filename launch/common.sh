# Shared helpers for the launch scripts: fail fast on missing variables, print every command before running it.
set -euo pipefail
need() { for v in "$@"; do [ -n "${!v:-}" ] || { echo "error: set $v (see --help)" >&2; exit 2; }; done; }
run() { printf '+'; printf ' %q' "$@"; printf '\n'; "$@"; }
want_help() { for a in "$@"; do [ "$a" = "--help" ] || [ "$a" = "-h" ] && return 0; done; return 1; }
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0; }
