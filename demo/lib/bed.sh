# shellcheck shell=bash
# Starts the test bed (kcp + the physical clusters, real API servers) for the demo and lays out the state
# directory the brief's commands expect. Needs common.sh, TMC_TESTBED, BIN_DIR.

BED_CLUSTERS=(kcp-west kcp-east)
BED_WORKSPACE="root:tmc"
BED_READY_TIMEOUT="${TMC_DEMO_BED_TIMEOUT:-600}"
# Tenant workspaces root:teams:<name> bound to tmc's APIExport (--tenants); none by default.
BED_TENANTS=()

# start_bed STATE: runs `tmc-testbed up` in the background (own session, log in STATE/testbed.log), waits for
# its READY line, then writes STATE/admin.kubeconfig and the links. A bed that fails to start is retried once
# with a fresh directory (kcp sometimes refuses the first workspace while it is still bootstrapping).
start_bed() {
  local state="$1"
  if run_bed "${state}"; then
    layout_state "${state}"
    return 0
  fi
  log_tail "${state}/testbed.log"
  warn "the test bed failed to start (above; logs kept in ${state}/testbed.1.log and ${state}/bed.1/); retrying once"
  mv "${state}/testbed.log" "${state}/testbed.1.log"
  mv "${state}/bed" "${state}/bed.1"
  if run_bed "${state}"; then
    layout_state "${state}"
    return 0
  fi
  log_tail "${state}/testbed.log"
  die "the test bed failed to start twice (log: ${state}/testbed.log; component logs under ${state}/bed/)"
}

# run_bed STATE: one attempt; returns non-zero when tmc-testbed exits or times out before READY.
run_bed() {
  local state="$1" log="$1/testbed.log" pid clusters
  clusters="$(IFS=,; echo "${BED_CLUSTERS[*]}")"
  local tenants=()
  ((${#BED_TENANTS[@]} == 0)) || tenants=(--tenants "$(IFS=,; echo "${BED_TENANTS[*]}")")
  info "tmc-testbed up --dir ${state}/bed --clusters ${clusters} --workspace ${BED_WORKSPACE} --install-kube-crds ${tenants[*]}"
  TMC_TESTBED_BIN="${BIN_DIR}" setsid "${TMC_TESTBED}" up --dir "${state}/bed" --clusters "${clusters}" \
    --workspace "${BED_WORKSPACE}" --context-prefix kind- --install-kube-crds "${tenants[@]}" </dev/null >"${log}" 2>&1 &
  pid=$!
  record_pid "${state}" tmc-testbed "${pid}"
  local deadline=$((SECONDS + BED_READY_TIMEOUT)) shown=0 lines
  while ! grep -q '^READY ' "${log}" 2>/dev/null; do
    # Progress: the bed's own timestamped lines as they come.
    lines="$(grep -c '^\[testbed ' "${log}" 2>/dev/null || true)"
    if ((lines > shown)); then
      grep '^\[testbed ' "${log}" | sed -n "$((shown + 1)),${lines}p" | sed 's/^/    /'
      shown="${lines}"
    fi
    pid_alive "${pid}" || return 1
    if ((SECONDS >= deadline)); then
      warn "the test bed was not ready within ${BED_READY_TIMEOUT}s"
      stop_pid tmc-testbed "${pid}"
      return 1
    fi
    sleep 1
  done
  ok "$(grep '^READY ' "${log}")"
}

# layout_state STATE: admin.kubeconfig = the workspace (current context) + kind-<cluster> contexts, and links
# so that /tmp/kcp-demo-*/kcp.log and /tmp/kcp-demo-*/<cluster>.kubeconfig exist as the brief says.
layout_state() {
  local state="$1" bed="$1/bed" c
  [[ -f "${bed}/admin.kubeconfig" ]] || die "the bed wrote no ${bed}/admin.kubeconfig"
  [[ -f "${bed}/kubeconfig" ]] || die "the bed wrote no ${bed}/kubeconfig (the merged kind-* contexts)"
  KUBECONFIG="${bed}/admin.kubeconfig:${bed}/kubeconfig" kubectl config view --flatten >"${state}/admin.kubeconfig" ||
    die "merging ${bed}/admin.kubeconfig and ${bed}/kubeconfig failed"
  KUBECONFIG="${state}/admin.kubeconfig" kubectl config use-context "${BED_WORKSPACE}" >/dev/null ||
    die "no context ${BED_WORKSPACE} in ${bed}/admin.kubeconfig"
  ln -sf bed/kcp.log "${state}/kcp.log"
  if ((${#BED_TENANTS[@]} > 0)); then
    [[ -f "${bed}/tenants.kubeconfig" ]] || die "the bed wrote no ${bed}/tenants.kubeconfig (--tenants)"
    ln -sf bed/tenants.kubeconfig "${state}/tenants.kubeconfig"
  fi
  for c in "${BED_CLUSTERS[@]}"; do
    ln -sf "bed/${c}.kubeconfig" "${state}/${c}.kubeconfig"
    ln -sfn "bed/${c}" "${state}/${c}"
    KUBECONFIG="${state}/admin.kubeconfig" kubectl config get-contexts "kind-${c}" >/dev/null 2>&1 ||
      die "admin.kubeconfig lacks context kind-${c} (the bed's ${bed}/kubeconfig should hold it)"
  done
  ok "${state}/admin.kubeconfig: current context ${BED_WORKSPACE}, plus kind-kcp-west and kind-kcp-east"
}
