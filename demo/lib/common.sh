# shellcheck shell=bash
# Shared by tmc-virtual-cluster-demo.sh and tmc-syncer-helper.sh: output, bounded waits, the demo's state
# directory (/tmp/kcp-demo-<id>/) and the processes recorded in it.
#
# State directory layout (written by the demo):
#   admin.kubeconfig      kcp workspace (current context) + kind-kcp-west / kind-kcp-east contexts
#   kcp.log               kcp's log (link into bed/)
#   kcp-west.kubeconfig   per-cluster kubeconfigs (links into bed/), kcp-west/ kcp-east/ component logs
#   bed/                  the test bed's own directory (tmc-testbed up --dir)
#   tmc.toml              tmcd's configuration;  tmcd.log, tmc-syncer-kcp-east.log, testbed.log
#   policies/             tmcd's hot-reloaded policy directory
#   pids                  "<name> <pid> <start time> <program>" per process the demo started (stop order:
#                         last first; a line counts only while that very process runs, as the current user)
#   admin.url             http://127.0.0.1:<port> of tmcd's admin server
#   admin.token           bearer token of the admin API (tmc.toml [admin].token_file)
#   env                   TMC_DEMO_BIN_DIR (test bed binaries), TMC_DEMO_TMCD (tmcd binary)

# Kubeconfigs hold client keys and bearer tokens: everything the demo, the test bed and the processes they
# start create is private to the current user (state directory 0700, files 0600).
umask 077

# Parent of the state directories: /tmp, so the brief's /tmp/kcp-demo-*/ paths hold. Tests point it at a
# private directory so that they neither see nor stop a demo someone runs by hand.
TMC_DEMO_ROOT="${TMC_DEMO_ROOT:-/tmp}"
TMC_DEMO_STATE_GLOB="${TMC_DEMO_ROOT}/kcp-demo-*"
# A symlink whose name is literally "kcp-demo-*", pointing at the newest demo's state dir: bash does not expand
# globs in `export KUBECONFIG=/tmp/kcp-demo-*/admin.kubeconfig`, so that line of the brief works as typed
# only if this literal path exists. It is skipped wherever the state dirs are listed.
# shellcheck disable=SC2034  # used by tmc-virtual-cluster-demo.sh, which sources this file
TMC_DEMO_LATEST_LINK="${TMC_DEMO_ROOT}/kcp-demo-*"

if [[ -t 1 && -z "${NO_COLOR:-}" ]]; then
  C_BOLD=$'\e[1m'; C_DIM=$'\e[2m'; C_RED=$'\e[31m'; C_GREEN=$'\e[32m'; C_YELLOW=$'\e[33m'; C_BLUE=$'\e[34m'; C_OFF=$'\e[0m'
else
  C_BOLD=""; C_DIM=""; C_RED=""; C_GREEN=""; C_YELLOW=""; C_BLUE=""; C_OFF=""
fi

# Step banner: step N "title" "what it does". Records when each step starts, for step_timings.
STEP_STARTS=()
STEP_TITLES=()
step() {
  STEP_STARTS+=("${SECONDS}")
  STEP_TITLES+=("$1. $2")
  echo
  echo "${C_BOLD}${C_BLUE}=== Step $1: $2 ===${C_OFF}"
  [[ -n "${3:-}" ]] && echo "${C_DIM}$3${C_OFF}"
  return 0
}
# step_timings: how long each step took (wall clock, seconds).
step_timings() {
  local i end
  for i in "${!STEP_STARTS[@]}"; do
    end="${STEP_STARTS[i + 1]:-${SECONDS}}"
    printf '    %4ds  %s\n' "$((end - STEP_STARTS[i]))" "${STEP_TITLES[i]}"
  done
}
info() { echo "${C_BLUE}-->${C_OFF} $*"; }
ok() { echo "${C_GREEN} ok${C_OFF} $*"; }
warn() { echo "${C_YELLOW}WARNING:${C_OFF} $*" >&2; }
die() {
  echo "${C_RED}${C_BOLD}FAILED:${C_OFF} $*" >&2
  exit 1
}
# Shows a command, then runs it (evidence for the audience).
show() {
  echo "${C_DIM}\$ $*${C_OFF}"
  "$@"
}

# wait_until TIMEOUT_S "what is expected" "where to look" CMD...: polls CMD every second until it succeeds.
# On timeout: exits with the expectation, CMD's last output and the log paths.
wait_until() {
  local timeout="$1" what="$2" where="$3"
  shift 3
  local deadline=$((SECONDS + timeout)) last=""
  while true; do
    if last="$("$@" 2>&1)"; then
      return 0
    fi
    if ((SECONDS >= deadline)); then
      die "expected ${what} within ${timeout}s, but it did not happen.
  last check ($*): ${last:-<no output>}
  look at: ${where}"
    fi
    sleep 1
  done
}

# log_tail FILE: on stderr, a Rust program's final error ("Error: ..." up to its backtrace) when FILE has one,
# else its last 30 lines without backtrace frames; long lines cut at 400 characters.
log_tail() {
  echo "--- from $1:" >&2
  if grep -q '^Error: ' "$1" 2>/dev/null; then
    awk '/^Error: /{p=1} /^Stack backtrace:/{p=0} p' "$1" | head -n 20 | cut -c1-400 >&2 || true
  else
    grep -v -E '^[[:space:]]+([0-9]+: |at )' "$1" 2>/dev/null | tail -n 30 | cut -c1-400 >&2 || true
  fi
}

# A free TCP port on 127.0.0.1 (nothing answers a connection to it).
free_port() {
  local port
  for port in $(seq "${1:-19470}" "$((${1:-19470} + 200))"); do
    if ! (exec 3<>"/dev/tcp/127.0.0.1/${port}") 2>/dev/null; then
      echo "${port}"
      return 0
    fi
  done
  return 1
}

# --- processes recorded in STATE/pids -------------------------------------------------------------

# start_time PID: the process's start time in clock ticks since boot (field 22 of /proc/PID/stat), which
# tells a recorded process from a later one that reuses its pid.
start_time() {
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  # Field 2 (comm) may hold spaces; everything after its closing parenthesis is space-separated.
  stat="${stat##*) }"
  # shellcheck disable=SC2086
  set -- ${stat}
  echo "${20}"
}

# command_of PID: the base name of the process's program (argv[0] of /proc/PID/cmdline).
command_of() {
  local argv0
  argv0="$(tr '\0' '\n' <"/proc/$1/cmdline" 2>/dev/null | head -n 1)" || return 1
  basename -- "${argv0:-?}"
}

# record_pid STATE NAME PID: appends "NAME PID START_TIME COMMAND" to STATE/pids. A process started as
# `setsid PROGRAM ... &` is recorded once it runs PROGRAM (up to 5 s): read before or during the exec, its
# command would be `bash`, `setsid` or empty, and the process would no longer count as the recorded one.
record_pid() {
  local command tries=50
  command="$(command_of "$3")"
  while [[ "${command}" == setsid || "${command}" == "?" || "${command}" == bash ]] && ((tries-- > 0)); do
    sleep 0.1
    command="$(command_of "$3")"
  done
  echo "$2 $3 $(start_time "$3") ${command}" >>"$1/pids"
}

# owned_by_me PID: the process runs as the current user (a demo never signals anyone else's process).
owned_by_me() { [[ -O "/proc/$1" ]]; }

# True when PID is alive and not a zombie.
pid_alive() {
  [[ -n "$1" && -d "/proc/$1" ]] || return 1
  local state
  state="$(awk '/^State:/ {print $2}' "/proc/$1/status" 2>/dev/null)"
  [[ -n "${state}" && "${state}" != Z ]]
}

# Live "<name> <pid>" lines of STATE/pids, in recording order: alive, owned by the current user, and
# still the process that was recorded (same start time and program), never a later process that got the
# same pid.
live_pids() {
  local name pid started command
  [[ -f "$1/pids" ]] || return 0
  while read -r name pid started command; do
    pid_alive "${pid}" && owned_by_me "${pid}" || continue
    [[ "$(start_time "${pid}")" == "${started}" && "$(command_of "${pid}")" == "${command}" ]] || continue
    echo "${name} ${pid}"
  done <"$1/pids"
  return 0
}

# PIDs of the current user's processes whose command line names STATE/bed/ (the test bed's kcp, etcd,
# apiservers, kwok).
pids_mentioning() {
  local dir="$1/bed" p
  for p in /proc/[0-9]*; do
    [[ "${p#/proc/}" == "$$" ]] && continue
    [[ -O "${p}" ]] || continue
    if grep -qF -- "${dir}/" <<<"$({ tr '\0' ' ' <"${p}/cmdline"; } 2>/dev/null)"; then
      pid_alive "${p#/proc/}" && echo "${p#/proc/}"
    fi
  done
  return 0
}

# stop_pid NAME PID: SIGTERM, wait up to 30 s, then SIGKILL.
stop_pid() {
  local name="$1" pid="$2" i
  pid_alive "${pid}" || return 0
  kill -TERM "${pid}" 2>/dev/null || true
  for i in $(seq 1 60); do
    pid_alive "${pid}" || { echo "stopped ${name} (pid ${pid})"; return 0; }
    sleep 0.5
  done
  warn "${name} (pid ${pid}) ignored SIGTERM for 30 s; sending SIGKILL"
  kill -KILL "${pid}" 2>/dev/null || true
  sleep 1
}

# stop_state STATE: stops every recorded process, last started first, then any leftover process whose
# command line names STATE/bed/ (the bed kills its children itself; this is the safety net).
stop_state() {
  local dir="$1" lines=() i name pid
  mapfile -t lines < <(live_pids "${dir}")
  for ((i = ${#lines[@]} - 1; i >= 0; i--)); do
    read -r name pid <<<"${lines[i]}"
    stop_pid "${name}" "${pid}"
  done
  for pid in $(pids_mentioning "${dir}"); do
    stop_pid "leftover process" "${pid}"
  done
}

# --- finding a demo ---------------------------------------------------------------------------------

# The state dir of the running demo: $TMC_DEMO_DIR, else the newest /tmp/kcp-demo-* whose tmcd is alive,
# else the newest one at all (for logs of a stopped demo). Fails when there is none.
find_state_dir() {
  if [[ -n "${TMC_DEMO_DIR:-}" ]]; then
    [[ -d "${TMC_DEMO_DIR}" ]] || die "TMC_DEMO_DIR=${TMC_DEMO_DIR} is not a directory"
    [[ -O "${TMC_DEMO_DIR}" ]] || die "TMC_DEMO_DIR=${TMC_DEMO_DIR} belongs to another user: a demo only reads and stops its own (fix: point TMC_DEMO_DIR at a state directory of yours)"
    echo "${TMC_DEMO_DIR}"
    return 0
  fi
  local d newest_alive="" newest="" dirs=()
  mapfile -t dirs < <(all_state_dirs)
  # Newest first (the names come from mktemp: one line each).
  ((${#dirs[@]} == 0)) || mapfile -t dirs < <(ls -1dt "${dirs[@]}")
  for d in "${dirs[@]}"; do
    [[ -z "${newest}" ]] && newest="$d"
    if [[ -z "${newest_alive}" ]] && grep -q '^tmcd ' <<<"$(live_pids "$d")"; then
      newest_alive="$d"
    fi
  done
  if [[ -n "${newest_alive}" ]]; then
    echo "${newest_alive}"
  elif [[ -n "${newest}" ]]; then
    echo "${newest}"
  else
    die "no demo state found under ${TMC_DEMO_STATE_GLOB} (start one: ./tmc-virtual-cluster-demo.sh --skip-cleanup)"
  fi
}

# Every /tmp/kcp-demo-* directory of the current user (not the kcp-demo-* link, nobody else's).
all_state_dirs() {
  local d
  # shellcheck disable=SC2086
  for d in ${TMC_DEMO_STATE_GLOB}; do
    [[ -d "$d" && ! -L "$d" && -O "$d" ]] && echo "$d"
  done
  return 0
}
