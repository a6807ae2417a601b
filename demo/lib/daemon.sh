# shellcheck shell=bash
# tmcd and the pull-mode syncer in the demo: configuration, start, readiness, policy generation.
# Needs common.sh, ROOT, TMCD, TMC_SYNCER, BED_WORKSPACE.

# install_policy SRC DEST: copies a module into the policy directory atomically (temp file in the same
# directory, then rename), so tmcd's watcher never sees a half-written module.
install_policy() {
  local src="$1" dest="$2" tmp
  [[ -f "${src}" ]] || die "policy module ${src} is missing (build it: hack/build-policies.sh)"
  tmp="$(dirname "${dest}")/.$(basename "${dest}").tmp.$$"
  cp "${src}" "${tmp}"
  mv -f "${tmp}" "${dest}"
  echo "installed $(basename "${src}") as ${dest} ($(stat -c %s "${dest}") bytes)"
}

# render_config STATE EAST_MODE ADMIN_ADDRESS: writes STATE/tmc.toml from demo/tmc.toml.template, and the
# admin API's bearer token STATE/admin.token (once) that tmcd's commands read through TMC_ADMIN_TOKEN_FILE.
render_config() {
  local state="$1"
  [[ -s "${state}/admin.token" ]] || head -c 32 /dev/urandom | base64 | tr -d '\n' >"${state}/admin.token"
  export TMC_ADMIN_TOKEN_FILE="${state}/admin.token"
  sed -e "s|@KCP_KUBECONFIG@|${state}/admin.kubeconfig|" \
    -e "s|@WORKSPACE@|${BED_WORKSPACE}|" \
    -e "s|@WEST_KUBECONFIG@|${state}/bed/kcp-west.kubeconfig|" \
    -e "s|@EAST_KUBECONFIG@|${state}/bed/kcp-east.kubeconfig|" \
    -e "s|@EAST_MODE@|$2|" \
    -e "s|@POLICY_DIR@|${state}/policies|" \
    -e "s|@ADMIN_ADDRESS@|$3|" \
    -e "s|@ADMIN_TOKEN_FILE@|${state}/admin.token|" \
    "${ROOT}/demo/tmc.toml.template" >"${state}/tmc.toml"
  # Export mode (--tenants, step 8): every workspace bound to tmc's APIExport, through its virtual workspace.
  if [[ -n "${TMC_DEMO_EXPORT:-}" ]]; then
    sed -i "/^workspace = /a export = \"${TMC_DEMO_EXPORT}\"" "${state}/tmc.toml"
  fi
  if grep -n '^[^#]*@[A-Z_]*@' "${state}/tmc.toml"; then
    die "unfilled placeholders in ${state}/tmc.toml (demo/tmc.toml.template and demo/lib/daemon.sh disagree)"
  fi
}

# start_tmcd STATE EAST_MODE: renders the configuration, checks it, starts tmcd and waits until its admin API
# answers as this very process (the identity holds its pid). A port taken between the check and tmcd's bind
# is retried with another port, twice at most.
start_tmcd() {
  local state="$1" attempt
  for attempt in 1 2 3; do
    if try_start_tmcd "${state}" "$2"; then
      return 0
    fi
    grep -q 'binding the admin server' "${state}/tmcd.log" ||
      die "tmcd exited during start (log: ${state}/tmcd.log)"
    warn "tmcd's admin port was taken meanwhile (attempt ${attempt}); trying another port"
  done
  die "tmcd could not bind an admin port in 3 attempts (log: ${state}/tmcd.log)"
}

# try_start_tmcd STATE EAST_MODE: one start; non-zero when tmcd exits before its admin API answers.
try_start_tmcd() {
  local state="$1" port pid url
  port="$(free_port $((20000 + RANDOM % 9000)))" || die "no free TCP port for tmcd's admin server on 127.0.0.1"
  url="http://127.0.0.1:${port}"
  render_config "${state}" "$2" "127.0.0.1:${port}"
  show "${TMCD}" check-config --config "${state}/tmc.toml" ||
    die "tmcd refused ${state}/tmc.toml (rendered from demo/tmc.toml.template)"
  echo "${url}" >"${state}/admin.url"
  info "starting tmcd --config ${state}/tmc.toml (log: ${state}/tmcd.log, admin: ${url})"
  setsid "${TMCD}" --config "${state}/tmc.toml" </dev/null >>"${state}/tmcd.log" 2>&1 &
  pid=$!
  record_pid "${state}" tmcd "${pid}"
  local deadline=$((SECONDS + ${TIMEOUT:-120}))
  until grep -q "\"identity\": \".*-${pid}-" <<<"$("${TMCD}" status --admin "${url}" --json 2>/dev/null)"; do
    if ! pid_alive "${pid}"; then
      log_tail "${state}/tmcd.log"
      return 1
    fi
    ((SECONDS < deadline)) || die "tmcd's admin API at ${url} did not answer within ${TIMEOUT:-120}s (log: ${state}/tmcd.log)"
    sleep 1
  done
  ok "tmcd running (pid ${pid}), admin API ${url}"
}

# start_pull_syncer STATE CLUSTER: a tmc-syncer agent for CLUSTER, reading the workspace, writing the cluster.
start_pull_syncer() {
  local state="$1" cluster="$2" log pid
  log="${state}/tmc-syncer-${cluster}.log"
  info "starting tmc-syncer --sync-target ${cluster} (pull mode, log: ${log})"
  echo "${C_DIM}\$ tmc-syncer --upstream-kubeconfig ${state}/admin.kubeconfig --upstream-context ${BED_WORKSPACE} \\
    --downstream-kubeconfig ${state}/bed/${cluster}.kubeconfig --sync-target ${cluster} --synced-from tmc-workloads${C_OFF}"
  setsid "${TMC_SYNCER}" --upstream-kubeconfig "${state}/admin.kubeconfig" --upstream-context "${BED_WORKSPACE}" \
    --downstream-kubeconfig "${state}/bed/${cluster}.kubeconfig" --sync-target "${cluster}" \
    --synced-from tmc-workloads --workspace-path "${BED_WORKSPACE}" \
    --resources apps/v1/Deployment,v1/Service,v1/ConfigMap --heartbeat-interval 5 \
    </dev/null >>"${log}" 2>&1 &
  pid=$!
  record_pid "${state}" "tmc-syncer-${cluster}" "${pid}"
  ok "tmc-syncer for ${cluster} running (pid ${pid})"
}

# expect_ready CLUSTER: its SyncTarget's Ready condition is True.
expect_ready() {
  local status
  status="$(kubectl get synctarget "$1" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>&1)"
  echo "SyncTarget $1 Ready=${status:-<none>}"
  [[ "${status}" == True ]]
}

# wait_ready CLUSTER SECONDS: like expect_ready, polled; returns non-zero on timeout instead of exiting.
wait_ready() {
  local deadline=$((SECONDS + $2))
  until expect_ready "$1" >/dev/null; do
    ((SECONDS < deadline)) || return 1
    sleep 2
  done
}

# pid_of STATE NAME: the live pid recorded under NAME (empty when none).
pid_of() {
  live_pids "$1" | awk -v n="$2" '$1 == n {p = $2} END {print p}'
}

# stop_named STATE NAME: stops the live process recorded under NAME.
stop_named() {
  local pid
  pid="$(pid_of "$1" "$2")"
  [[ -z "${pid}" ]] || stop_pid "$2" "${pid}"
}

# policy_generation STATE: the running tmcd's policy generation (tmcd status --json, top-level key).
policy_generation() {
  local json gen
  json="$("${TMCD}" status --admin "$(cat "$1/admin.url")" --json 2>&1)" || { echo "error: ${json}"; return 1; }
  gen="$(sed -n 's/^  "policyGeneration": \([0-9][0-9]*\),\{0,1\}$/\1/p' <<<"${json}")"
  [[ -n "${gen}" ]] || { echo "error: no top-level policyGeneration in tmcd status --json"; return 1; }
  echo "${gen}"
}

# expect_generation_above STATE N: the policy generation is greater than N.
expect_generation_above() {
  local gen
  gen="$(policy_generation "$1")" || { echo "${gen}"; return 1; }
  echo "policy generation ${gen} (waiting for > $2)"
  ((gen > $2))
}
