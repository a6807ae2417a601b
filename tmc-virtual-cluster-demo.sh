#!/usr/bin/env bash
# tmc-virtual-cluster-demo.sh: the Transparent Multi-Cluster demo. Workloads are deployed TO one kcp
# workspace (the virtual cluster); tmcd places them on two physical clusters with WebAssembly policies and
# syncers copy them there. Walkthrough: docs/demo.md.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=demo/lib/common.sh
source "${ROOT}/demo/lib/common.sh"
# shellcheck source=demo/lib/build.sh
source "${ROOT}/demo/lib/build.sh"
# shellcheck source=demo/lib/bed.sh
source "${ROOT}/demo/lib/bed.sh"
# shellcheck source=demo/lib/observe.sh
source "${ROOT}/demo/lib/observe.sh"
# shellcheck source=demo/lib/daemon.sh
source "${ROOT}/demo/lib/daemon.sh"
# shellcheck source=demo/lib/tenants.sh
source "${ROOT}/demo/lib/tenants.sh"

usage() {
  cat <<'USAGE'
Usage: ./tmc-virtual-cluster-demo.sh [options]

Runs the TMC virtual cluster demo: two physical clusters (kcp-west in us-west-1, kcp-east in us-east-1),
a kcp workspace acting as the virtual cluster, tmcd with its placement policies and syncers, a workload
deployed TO the virtual cluster, its propagation, a policy hot reload and a placement change.
Each step shows its evidence and checks it; the script exits non-zero naming the failed expectation.

Options:
  --force-recreate   stop any running demo and delete old /tmp/kcp-demo-* state first
  --debug            trace the script (set -x) and run tmcd and the syncer with RUST_LOG=debug
  --skip-cleanup     leave everything running at the end and print how to explore it and how to stop it
  --non-interactive  no "press Enter" pauses (also: TMC_DEMO_NONINTERACTIVE=1, CI set, or stdin not a TTY)
  --rebuild          rebuild the policy modules even when target/policies/ has them
  --tenants          add step 8, many virtual clusters through one tmcd: tenant workspaces root:teams:a and
                     root:teams:b bound to tmc's APIExport, tmcd restarted in export mode, the same default/web
                     deployed by both and run side by side on kcp-west, each tenant seeing only its own
                     (docs/tenancy.md; the bed takes ~40 s longer to start)
  --help             this text

Environment:
  TMC_DEMO_EAST_MODE   pull (default: kcp-east gets a tmc-syncer agent, falling back to push if it fails) or push
  TMC_DEMO_BED_TIMEOUT seconds to wait for the test bed (default 600)
  TMC_DEMO_TIMEOUT     seconds to wait for each expectation (default 120)
  TMC_DEMO_ROOT        parent of the state directory (default /tmp)
  TMC_DEMO_TMC_SYNCER  pull-mode agent binary (default target/debug/tmc-syncer)

State: /tmp/kcp-demo-<id>/ (admin.kubeconfig, kcp.log, <cluster>.kubeconfig, tmcd.log, pids, ...).
Afterwards: ./tmc-syncer-helper.sh status | logs --cluster NAME | sync-workload --cluster NAME | verify | stop
USAGE
}

FORCE_RECREATE=0
DEBUG=0
SKIP_CLEANUP=0
REBUILD=0
TENANTS_PART=0
NONINTERACTIVE="${TMC_DEMO_NONINTERACTIVE:-0}"
[[ -n "${CI:-}" ]] && NONINTERACTIVE=1
[[ -t 0 ]] || NONINTERACTIVE=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --force-recreate) FORCE_RECREATE=1 ;;
    --debug) DEBUG=1 ;;
    --skip-cleanup) SKIP_CLEANUP=1 ;;
    --non-interactive) NONINTERACTIVE=1 ;;
    --rebuild) REBUILD=1 ;;
    --tenants) TENANTS_PART=1 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "unknown option: $1 (see ./tmc-virtual-cluster-demo.sh --help)" >&2; exit 2 ;;
  esac
  shift
done
[[ "${DEBUG}" == 1 ]] && set -x
[[ "${TENANTS_PART}" == 1 ]] && BED_TENANTS=("${TENANTS[@]}")
TIMEOUT="${TMC_DEMO_TIMEOUT:-120}"
EAST_MODE="${TMC_DEMO_EAST_MODE:-pull}"
[[ "${EAST_MODE}" == pull || "${EAST_MODE}" == push ]] || die "TMC_DEMO_EAST_MODE must be pull or push, not ${EAST_MODE}"
export RUST_LOG="${RUST_LOG:-$([[ "${DEBUG}" == 1 ]] && echo debug || echo info)}"

pause() {
  [[ "${NONINTERACTIVE}" == 1 ]] && return 0
  read -r -p "${C_DIM}Press Enter to continue...${C_OFF}" _ || true
}

# --- before the steps: old demos, builds, state dir -----------------------------------------------------

running_demos() {
  local d
  for d in $(all_state_dirs); do
    [[ -n "$(live_pids "$d")" ]] && echo "$d"
  done
  return 0
}

if [[ "${FORCE_RECREATE}" == 1 ]]; then
  for d in $(all_state_dirs); do
    info "stopping the demo in ${d} and removing it (--force-recreate)"
    stop_state "${d}"
    rm -rf "${d}"
  done
  rm -f "${TMC_DEMO_LATEST_LINK}"
else
  running="$(running_demos)"
  [[ -z "${running}" ]] || die "a demo is already running in ${running}
  explore it (export KUBECONFIG=${running%%$'\n'*}/admin.kubeconfig), stop it with ./tmc-syncer-helper.sh stop,
  or start afresh with ./tmc-virtual-cluster-demo.sh --force-recreate"
fi

echo "${C_BOLD}TMC virtual cluster demo${C_OFF}: preparing binaries"
build_testbed_binaries
export PATH="${BIN_DIR}:${PATH}"
build_tmc_binaries
build_policies "${REBUILD}" location-affinity active-passive label-stamper

STATE="$(mktemp -d "${TMC_DEMO_ROOT}/kcp-demo-XXXXXX")"
chmod 700 "${STATE}"
touch "${STATE}/pids"
printf 'TMC_DEMO_BIN_DIR=%q\nTMC_DEMO_TMCD=%q\n' "${BIN_DIR}" "${TMCD}" >"${STATE}/env"
ln -sfn "$(basename "${STATE}")" "${TMC_DEMO_LATEST_LINK}"
export KUBECONFIG="${STATE}/admin.kubeconfig"
info "state directory: ${STATE}"

cleanup() {
  local rc=$?
  set +x
  if [[ "${SKIP_CLEANUP}" == 1 && ${rc} -eq 0 ]]; then
    return 0
  fi
  if [[ "${SKIP_CLEANUP}" == 1 ]]; then
    echo "the demo did not finish; --skip-cleanup: leaving its processes running for inspection (stop: ./tmc-syncer-helper.sh stop)" >&2
    return 0
  fi
  echo
  info "cleaning up: stopping every process the demo started (state and logs stay in ${STATE})"
  stop_state "${STATE}"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the steps ----------------------------------------------------------------------------------------------

step 1 "Physical clusters kcp-west and kcp-east, and kcp" \
  "Real API servers instead of Kind: each physical cluster is etcd + kube-apiserver + kube-controller-manager +
kube-scheduler + kwok (fake nodes that run pods); kcp is the control plane of the virtual cluster."
start_bed "${STATE}"
for c in kcp-west kcp-east; do
  show kubectl --context "kind-${c}" get nodes
done
pause

step 2 "The TMC virtual cluster: kcp workspace ${BED_WORKSPACE}, with core Kubernetes and TMC CRDs" \
  "Users deploy to this one workspace. kcp serves namespaces and configmaps itself; deployments come from a CRD
the bed installed (--install-kube-crds), services and pods from demo/crds/; the TMC APIs are SyncTarget and
ClusterWorkloadPlacement (config/crds/)."
show kubectl --context root get workspaces
show kubectl apply --server-side --force-conflicts --field-manager tmc-demo -f "${ROOT}/demo/crds/"
show kubectl apply --server-side --force-conflicts --field-manager tmc-demo -f "${ROOT}/config/crds/"
show kubectl wait --for condition=Established --timeout=60s crd/services.core crd/pods.core \
  crd/synctargets.workload.kcp.io crd/clusterworkloadplacements.workload.kcp.io crd/deployments.apps
wait_until 60 "the workspace to serve deployments, services, pods and the TMC APIs" "${STATE}/kcp.log" \
  kubectl get deployments,services,pods,synctargets,clusterworkloadplacements -A
show kubectl api-resources --api-group=workload.kcp.io
pause

step 3 "SyncTarget registration" \
  "tmcd starts with ${STATE}/tmc.toml: it registers kcp-west (us-west-1, push mode) and kcp-east (us-east-1,
${EAST_MODE} mode) as SyncTargets, loads the policy modules of ${STATE}/policies/ (the placement slot
demo-placement and the transformation label-stamper) and serves its admin API."
mkdir -p "${STATE}/policies"
install_policy "${POLICY_SRC}/location-affinity.wasm" "${STATE}/policies/demo-placement.wasm"
install_policy "${POLICY_SRC}/label-stamper.wasm" "${STATE}/policies/label-stamper.wasm"
if [[ "${EAST_MODE}" == pull ]] && ! "${TMC_SYNCER}" --version >/dev/null 2>&1; then
  warn "${TMC_SYNCER} does not run; kcp-east uses push mode too"
  EAST_MODE=push
fi
start_tmcd "${STATE}" "${EAST_MODE}"
wait_until "${TIMEOUT}" "SyncTargets kcp-west and kcp-east in the workspace" "${STATE}/tmcd.log" \
  kubectl get synctarget kcp-west kcp-east
show kubectl get synctargets -o wide --show-labels
pause

step 4 "Syncers" \
  "kcp-west's syncer runs inside tmcd (push mode). kcp-east's $([[ "${EAST_MODE}" == pull ]] &&
    echo "runs as a separate tmc-syncer agent beside its cluster (pull mode): it reads tmcd's decisions from the
workspace and applies them" || echo "runs inside tmcd as well (push mode)"). Both heartbeat into their SyncTarget.
The ClusterWorkloadPlacement 'demo' names the policy slot demo-placement (location-affinity for now) and the
transformation label-stamper."
if [[ "${EAST_MODE}" == pull ]]; then
  start_pull_syncer "${STATE}" kcp-east
  if ! wait_ready kcp-east 60; then
    warn "the pull-mode syncer did not make kcp-east Ready within 60s (log: ${STATE}/tmc-syncer-kcp-east.log);
  falling back to push mode for kcp-east: restarting tmcd"
    stop_named "${STATE}" tmc-syncer-kcp-east
    stop_named "${STATE}" tmcd
    EAST_MODE=push
    start_tmcd "${STATE}" push
  fi
fi
for c in kcp-west kcp-east; do
  wait_until "${TIMEOUT}" "SyncTarget ${c} to be Ready (its syncer heartbeats)" \
    "${STATE}/tmcd.log, ${STATE}/tmc-syncer-kcp-east.log" expect_ready "${c}"
done
ok "both SyncTargets are Ready (kcp-west: push, kcp-east: ${EAST_MODE})"
show kubectl get synctargets -o wide
show kubectl apply -f "${ROOT}/demo/manifests/placement.yaml"
show "${TMCD}" status --admin "$(cat "${STATE}/admin.url")"
pause

step 5 "Workloads deployed TO the virtual cluster" \
  "Namespace demo-app with a Deployment (4 replicas), a Service and a ConfigMap, applied to the workspace only.
No physical cluster is addressed."
show kubectl apply -f "${ROOT}/demo/manifests/namespace.yaml" -f "${ROOT}/demo/manifests/workload.yaml"
show kubectl get deployments,services,configmaps,pods -n demo-app --show-labels
pause

step 6 "Propagation to the physical clusters" \
  "location-affinity selects both ready regions and splits the 4 replicas evenly (us-west-1 preferred first).
The copies carry the TMC lifecycle labels and annotations, plus the labels label-stamper computes for their
cluster; their status comes back to the virtual cluster."
for c in kcp-west kcp-east; do
  wait_until "${TIMEOUT}" "the Deployment, Service and ConfigMap on kind-${c}" "${STATE}/tmcd.log" expect_copies "${c}"
done
wait_until "${TIMEOUT}" "4 replicas split over both clusters (location-affinity)" "${STATE}/tmcd.log" \
  expect_split_over_both 4
for c in kcp-west kcp-east; do
  wait_until 30 "the TMC labels on kind-${c}'s copy" "${STATE}/tmcd.log" expect_tmc_labels "${c}"
  ok "$(expect_tmc_labels "${c}")"
done
wait_until 30 "label-stamper's labels on kind-kcp-west's copy" "${STATE}/tmcd.log" expect_stamped kcp-west us-west-1
ok "$(expect_stamped kcp-west us-west-1)"
wait_until 30 "label-stamper's labels on kind-kcp-east's copy" "${STATE}/tmcd.log" expect_stamped kcp-east us-east-1
ok "$(expect_stamped kcp-east us-east-1)"
wait_until "${TIMEOUT}" "the status of both copies brought back: 4 ready replicas on the virtual cluster's Deployment" \
  "${STATE}/tmcd.log, ${STATE}/tmc-syncer-kcp-east.log" expect_upstream_ready 4
ok "$(expect_upstream_ready 4)"
show_distribution
for c in kcp-west kcp-east; do show_cluster "${c}"; done
show kubectl --context kind-kcp-west -n demo-app get deployment web -o \
  jsonpath='{"labels: "}{.metadata.labels}{"\nannotations: "}{.metadata.annotations}{"\n"}'
show kubectl get deployments -n demo-app
show kubectl get clusterworkloadplacement demo -o wide
pause

step 7 "Dynamic placement: hot reload of the policy, then a placement change" \
  "(a) First a preview: tmcd policy diff runs active-passive in place of demo-placement over the live workloads
and shows what it would move, writing nothing. Then the policy file demo-placement.wasm is replaced, atomically,
by active-passive while tmcd runs: all replicas gather in the most preferred region (us-west-1), without a
restart and without editing the placement.
(b) The placement's preferences are changed to us-east-1 first: the workload moves to kcp-east."
tmcd_pid_before="$(pid_of "${STATE}" tmcd)"
gen_before="$(policy_generation "${STATE}")" || die "cannot read the policy generation from tmcd: ${gen_before}"
info "tmcd pid ${tmcd_pid_before}, policy generation ${gen_before}"
echo "${C_DIM}\$ ${TMCD} policy diff ${POLICY_SRC}/active-passive.wasm --as demo-placement --config ${STATE}/tmc.toml${C_OFF}"
preview="$("${TMCD}" policy diff "${POLICY_SRC}/active-passive.wasm" --as demo-placement --config "${STATE}/tmc.toml" 2>&1)" ||
  die "tmcd policy diff failed: ${preview}"
echo "${preview}"
grep -Eq "^Deployment +demo-app/${DEMO_DEPLOYMENT} +demo +moves +" <<<"${preview}" ||
  die "tmcd policy diff does not preview deployment ${DEMO_DEPLOYMENT} moving (see above)"
seen="$(expect_split_over_both 4)" || die "the preview must not move anything: ${seen}"
ok "preview: the diff shows deployment ${DEMO_DEPLOYMENT} moving; the clusters are untouched (${seen%%, expected*})"
swapped_at="${SECONDS}"
show install_policy "${POLICY_SRC}/active-passive.wasm" "${STATE}/policies/demo-placement.wasm"
wait_until "${TIMEOUT}" "tmcd to load the new module (policy generation above ${gen_before})" "${STATE}/tmcd.log" \
  expect_generation_above "${STATE}" "${gen_before}"
wait_until "${TIMEOUT}" "all 4 replicas on kcp-west and no copy left on kcp-east (active-passive)" \
  "${STATE}/tmcd.log" expect_distribution 4 absent
wait_until "${TIMEOUT}" "the Service and ConfigMap copies gone from kind-kcp-east" "${STATE}/tmcd.log" \
  expect_no_copies kcp-east
reload_seconds=$((SECONDS - swapped_at))
[[ "$(pid_of "${STATE}" tmcd)" == "${tmcd_pid_before}" ]] || die "tmcd restarted during the hot reload (pid changed)"
ok "hot reload: same tmcd (pid ${tmcd_pid_before}), policy generation $(policy_generation "${STATE}") (was ${gen_before}), \
copies moved within ${reload_seconds}s of the file swap (polled every second)"
show_distribution
show "${TMCD}" status --admin "$(cat "${STATE}/admin.url")"
pause

patched_at="${SECONDS}"
show kubectl patch clusterworkloadplacement demo --type merge -p \
  '{"spec":{"locationPreferences":[{"matchLabels":{"topology.kubernetes.io/region":"us-east-1"}},{"matchLabels":{"topology.kubernetes.io/region":"us-west-1"}}]}}'
wait_until "${TIMEOUT}" "all 4 replicas moved to kcp-east and no copy left on kcp-west" "${STATE}/tmcd.log" \
  expect_distribution absent 4
wait_until "${TIMEOUT}" "the Service and ConfigMap copies on kind-kcp-east" "${STATE}/tmcd.log" expect_copies kcp-east
wait_until "${TIMEOUT}" "the Service and ConfigMap copies gone from kind-kcp-west" "${STATE}/tmcd.log" \
  expect_no_copies kcp-west
show_distribution
show_cluster kcp-east
ok "placement change: the workload moved from kcp-west to kcp-east within $((SECONDS - patched_at))s of the patch"

if [[ "${TENANTS_PART}" == 1 ]]; then
  pause
  step 8 "Many virtual clusters through one tmcd: tenants a and b (--tenants)" \
    "Workspaces root:teams:a and root:teams:b are bound to tmc's APIExport in root:tmc (the inventory, which keeps
the SyncTargets). tmcd restarts in export mode (control_plane.export = \"tmc\"): one wildcard watch per resource
across every bound workspace, both syncers in push mode. The operator grants a the us-west-1 targets and b all;
each tenant applies its own placement 'web' and the SAME default/web. Both land on kcp-west, each in a namespace
of its own; each tenant sees only its own. demo-app's copies of steps 5-7 belong to root:tmc, which export mode
does not serve: they are left running, untouched."
  stop_named "${STATE}" tmc-syncer-kcp-east
  stop_named "${STATE}" tmcd
  TMC_DEMO_EXPORT=tmc start_tmcd "${STATE}" push
  show kubectl get apiexport tmc
  show kubectl get apiexportendpointslice tmc -o jsonpath='{.status.endpoints[*].url}{"\n"}'
  for c in kcp-west kcp-east; do
    wait_until "${TIMEOUT}" "SyncTarget ${c} Ready under the export-mode tmcd" "${STATE}/tmcd.log" expect_ready "${c}"
  done
  grant_tenants
  for t in "${TENANTS[@]}"; do
    wait_until "${TIMEOUT}" "placement web applied in root:teams:${t}" "${STATE}/tmcd.log" \
      apply_in_tenant "${t}" "${ROOT}/demo/manifests/tenants/placement.yaml"
    show tk "${t}" apply -f "${ROOT}/demo/manifests/tenants/web.yaml"
  done
  wait_until "${TIMEOUT}" "both tenants' default/web on kind-kcp-west, each in its own namespace" "${STATE}/tmcd.log" \
    expect_tenant_copies kcp-west "$(logical_cluster a)" "$(logical_cluster b)"
  ok "$(expect_tenant_copies kcp-west "$(logical_cluster a)" "$(logical_cluster b)")"
  for t in "${TENANTS[@]}"; do
    wait_until "${TIMEOUT}" "root:teams:${t}'s web to report 2 ready replicas (from its own copy)" "${STATE}/tmcd.log" \
      expect_tenant_ready "${t}" 2
    ok "$(expect_tenant_ready "${t}" 2)"
  done
  show kubectl --context kind-kcp-west get deployments -A -l "${TENANT_LABEL}" -L "${TENANT_LABEL}"
  for t in "${TENANTS[@]}"; do
    show tk "${t}" get deployments -A
  done
  ok "tenants: the same default/web of a and b runs on kcp-west in two namespaces; each workspace lists only its own"
fi

echo
echo "${C_BOLD}${C_GREEN}Demo complete: every step's expectation held.${C_OFF}"
echo "Time per step:"
step_timings
if [[ "${SKIP_CLEANUP}" == 1 ]]; then
  cat <<EXPLORE

Everything keeps running (--skip-cleanup). Explore:

  export KUBECONFIG=${STATE}/admin.kubeconfig     # or, as in the brief: ${TMC_DEMO_ROOT}/kcp-demo-*/admin.kubeconfig
  kubectl get deployments,services,pods -n demo-app
  kubectl get synctargets -o wide
  kubectl get clusterworkloadplacements -o yaml
  kubectl --context kind-kcp-west get all -n demo-app --show-labels
  kubectl --context kind-kcp-east get all -n demo-app --show-labels
  ./tmc-syncer-helper.sh status
  ./tmc-syncer-helper.sh logs --cluster kcp-west
$([[ "${TENANTS_PART}" == 1 ]] && echo "  kubectl --kubeconfig ${STATE}/tenants.kubeconfig --context root:teams:a get deployments   # (--tenants)
  kubectl --context kind-kcp-west get deployments -A -l ${TENANT_LABEL} -L ${TENANT_LABEL}")
  tail -f ${STATE}/kcp.log ${STATE}/tmcd.log

  (kubectl: ${BIN_DIR}/kubectl; put it first on PATH: export PATH=${BIN_DIR}:\$PATH)

Stop everything:  ./tmc-syncer-helper.sh stop
EXPLORE
  if [[ "${TMC_DEMO_ROOT}" != /tmp ]]; then
    echo "(the state is under TMC_DEMO_ROOT=${TMC_DEMO_ROOT}: export it too, so that the helper finds this demo)"
  fi
fi
