#!/usr/bin/env bash
# tmc-syncer-helper.sh: inspect and drive the syncers of a running demo. A thin wrapper over tmcd's
# subcommands, which talk to the running tmcd's admin API; the demo is found through /tmp/kcp-demo-*/
# (or TMC_DEMO_DIR). Every verb prints the tmcd command it runs, so it can be used without this script.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=demo/lib/common.sh
source "${ROOT}/demo/lib/common.sh"

usage() {
  cat <<'USAGE'
Usage: ./tmc-syncer-helper.sh COMMAND [options]

Commands:
  status                        syncer and target status, policies and placements (tmcd status)
  logs --cluster NAME [--follow]
                                recent log lines of NAME's syncer (tmcd syncer logs; for a pull-mode
                                cluster also the tail of its tmc-syncer agent's log file); --follow then
                                keeps printing new lines from the log files until Ctrl-C
  sync-workload --cluster NAME  re-queue every workload placed on NAME (tmcd syncer resync)
  verify                        check connectivity to kcp and to each physical cluster (tmcd verify)
  stop                          stop every process of the demo (syncers, tmcd, the test bed)
  --help                        this text

The demo is the newest /tmp/kcp-demo-*/ whose tmcd runs; set TMC_DEMO_DIR=/tmp/kcp-demo-<id> to choose.
Examples:
  ./tmc-syncer-helper.sh status
  ./tmc-syncer-helper.sh logs --cluster kcp-west
  ./tmc-syncer-helper.sh sync-workload --cluster kcp-east
USAGE
}

# Parses "--cluster NAME" from the remaining arguments; sets CLUSTER.
parse_cluster() {
  CLUSTER=""
  FOLLOW=0
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --follow | -f) [[ "${ALLOW_FOLLOW:-0}" == 1 ]] || die "--follow only goes with logs"; FOLLOW=1; shift ;;
      --cluster) CLUSTER="${2:-}"; [[ -n "${CLUSTER}" ]] || die "--cluster needs a NAME (kcp-west or kcp-east)"; shift 2 ;;
      --cluster=*) CLUSTER="${1#--cluster=}"; shift ;;
      *) die "unknown argument: $1 (see ./tmc-syncer-helper.sh --help)" ;;
    esac
  done
  [[ -n "${CLUSTER}" ]] || die "missing --cluster NAME (e.g. --cluster kcp-west)"
}

# Loads the running demo: STATE, TMCD, ADMIN.
load_demo() {
  STATE="$(find_state_dir)"
  [[ -f "${STATE}/env" ]] || die "${STATE} is not a demo state directory (no env file)"
  # Both are assigned by the env file; only the tmcd path is needed here.
  # shellcheck disable=SC2034
  local TMC_DEMO_BIN_DIR="" TMC_DEMO_TMCD=""
  # shellcheck disable=SC1091
  source "${STATE}/env"
  TMCD="${TMC_DEMO_TMCD}"
  [[ -x "${TMCD}" ]] || die "tmcd binary ${TMCD} (recorded in ${STATE}/env) is missing; rebuild: cargo build -p tmc-daemon"
  ADMIN="$(cat "${STATE}/admin.url" 2>/dev/null)" || die "no ${STATE}/admin.url: tmcd was never started in this demo"
  # The admin API's bearer token (tmcd's commands read the file named here).
  export TMC_ADMIN_TOKEN_FILE="${STATE}/admin.token"
}

require_running() {
  grep -q '^tmcd ' <<<"$(live_pids "${STATE}")" ||
    die "tmcd of the demo in ${STATE} is not running (start one: ./tmc-virtual-cluster-demo.sh --skip-cleanup)"
}

run() {
  echo "${C_DIM}\$ $*${C_OFF}"
  "$@"
}

cmd_status() {
  load_demo
  require_running
  echo "demo: ${STATE}"
  run "${TMCD}" status --admin "${ADMIN}"
  echo
  echo "processes:"
  live_pids "${STATE}" | awk '{printf "  %-22s pid %s\n", $1, $2}'
}

cmd_logs() {
  ALLOW_FOLLOW=1 parse_cluster "$@"
  load_demo
  require_running
  run "${TMCD}" syncer logs --cluster "${CLUSTER}" --admin "${ADMIN}"
  local agent_log="${STATE}/tmc-syncer-${CLUSTER}.log" pull=0
  grep -q "^tmc-syncer-${CLUSTER} " <<<"$(live_pids "${STATE}")" && pull=1
  if [[ "${pull}" == 1 ]]; then
    echo
    echo "# pull-mode agent tmc-syncer for ${CLUSTER}: last 40 lines of ${agent_log}"
    tail -n 40 "${agent_log}"
  fi
  [[ "${FOLLOW}" == 1 ]] || return 0
  # tmcd's admin API serves recent lines only: following reads the log files (Ctrl-C stops).
  if [[ "${pull}" == 1 ]]; then
    echo "# following ${agent_log}"
    tail -n 0 -F "${agent_log}"
  else
    echo "# following the lines of ${STATE}/tmcd.log that name ${CLUSTER}"
    tail -n 0 -F "${STATE}/tmcd.log" | grep --line-buffered -F -- "${CLUSTER}"
  fi
}

cmd_sync_workload() {
  parse_cluster "$@"
  load_demo
  require_running
  run "${TMCD}" syncer resync --cluster "${CLUSTER}" --admin "${ADMIN}"
}

cmd_verify() {
  [[ $# -eq 0 ]] || die "verify takes no arguments"
  load_demo
  run "${TMCD}" verify --config "${STATE}/tmc.toml"
}

cmd_stop() {
  [[ $# -eq 0 ]] || die "stop takes no arguments"
  local dirs=() d
  if [[ -n "${TMC_DEMO_DIR:-}" ]]; then
    dirs=("${TMC_DEMO_DIR}")
  else
    mapfile -t dirs < <(all_state_dirs)
  fi
  local stopped=0
  for d in "${dirs[@]}"; do
    if [[ -n "$(live_pids "${d}")" || -n "$(pids_mentioning "${d}")" ]]; then
      echo "stopping the demo in ${d}"
      stop_state "${d}"
      stopped=$((stopped + 1))
    fi
  done
  if ((stopped == 0)); then
    echo "no running demo found under ${TMC_DEMO_DIR:-${TMC_DEMO_STATE_GLOB}}"
  else
    echo "stopped ${stopped} demo(s); state and logs are kept (remove them with: rm -rf ${TMC_DEMO_STATE_GLOB})"
  fi
}

[[ $# -gt 0 ]] || { usage >&2; exit 2; }
command="$1"
shift
case "${command}" in
  status) [[ $# -eq 0 ]] || die "status takes no arguments"; cmd_status ;;
  logs) cmd_logs "$@" ;;
  sync-workload) cmd_sync_workload "$@" ;;
  verify) cmd_verify "$@" ;;
  stop) cmd_stop "$@" ;;
  -h | --help | help) usage ;;
  *) echo "unknown command: ${command} (see ./tmc-syncer-helper.sh --help)" >&2; exit 2 ;;
esac
