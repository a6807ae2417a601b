# shellcheck shell=bash
# What the demo observes on the physical clusters and checks: where the workload's copies are, their
# replicas and their tmc labels. Every check prints what it saw, so wait_until can report it on timeout.

DEMO_NS="demo-app"
DEMO_DEPLOYMENT="web"
DEMO_SERVICE="web"
DEMO_CONFIGMAP="web-config"

# replicas_on CLUSTER: spec.replicas of the demo Deployment's copy on kind-CLUSTER, or "absent".
replicas_on() {
  local out rest
  if out="$(kubectl --context "kind-$1" -n "${DEMO_NS}" get deployment "${DEMO_DEPLOYMENT}" \
    -o jsonpath='{.spec.replicas}{" "}{.metadata.deletionTimestamp}' 2>&1)"; then
    read -r out rest <<<"${out}"
    # A copy being deleted is on its way out.
    [[ -n "${rest:-}" ]] && { echo absent; return 0; }
    echo "${out:-1}"
  elif grep -q NotFound <<<"${out}"; then
    echo absent
  else
    echo "error: ${out}"
  fi
}

# distribution: "kcp-west=N kcp-east=M" (N, M: replicas or "absent").
distribution() {
  echo "kcp-west=$(replicas_on kcp-west) kcp-east=$(replicas_on kcp-east)"
}

# expect_distribution WEST EAST: succeeds when the copies are exactly that (a number or "absent").
expect_distribution() {
  local seen
  seen="$(distribution)"
  echo "seen ${seen}, expected kcp-west=$1 kcp-east=$2"
  [[ "${seen}" == "kcp-west=$1 kcp-east=$2" ]]
}

# expect_split_over_both TOTAL: both clusters hold a copy with at least one replica, summing to TOTAL.
expect_split_over_both() {
  local w e
  w="$(replicas_on kcp-west)"
  e="$(replicas_on kcp-east)"
  echo "seen kcp-west=${w} kcp-east=${e}, expected both > 0 summing to $1"
  [[ "${w}" =~ ^[0-9]+$ && "${e}" =~ ^[0-9]+$ ]] && ((w > 0 && e > 0 && w + e == $1))
}

# expect_copies CLUSTER: the Deployment, Service and ConfigMap all have a copy on kind-CLUSTER.
expect_copies() {
  local kind name kind_name missing=()
  for kind_name in "deployment/${DEMO_DEPLOYMENT}" "service/${DEMO_SERVICE}" "configmap/${DEMO_CONFIGMAP}"; do
    kind="${kind_name%/*}"
    name="${kind_name#*/}"
    kubectl --context "kind-$1" -n "${DEMO_NS}" get "${kind}" "${name}" >/dev/null 2>&1 || missing+=("${kind_name}")
  done
  echo "kind-$1: missing ${missing[*]:-nothing}"
  ((${#missing[@]} == 0))
}

# expect_no_copies CLUSTER: none of the three has a (live) copy on kind-CLUSTER.
expect_no_copies() {
  local kn present=()
  for kn in "deployment/${DEMO_DEPLOYMENT}" "service/${DEMO_SERVICE}" "configmap/${DEMO_CONFIGMAP}"; do
    if [[ -n "$(kubectl --context "kind-$1" -n "${DEMO_NS}" get "${kn}" --ignore-not-found \
      -o jsonpath='{.metadata.name}{.metadata.deletionTimestamp}' 2>/dev/null)" ]]; then
      # Present; being deleted still counts as present until it is gone.
      present+=("${kn}")
    fi
  done
  echo "kind-$1: still present ${present[*]:-nothing}"
  ((${#present[@]} == 0))
}

# expect_tmc_labels CLUSTER: the Deployment's copy carries the TMC lifecycle labels and annotations.
expect_tmc_labels() {
  local out
  out="$(kubectl --context "kind-$1" -n "${DEMO_NS}" get deployment "${DEMO_DEPLOYMENT}" -o \
    jsonpath='{.metadata.labels.workload\.kcp\.io/managed}|{.metadata.labels.workload\.kcp\.io/synced-from}|{.metadata.annotations.workload\.kcp\.io/sync-target}|{.metadata.annotations.workload\.kcp\.io/source-cluster}' 2>&1)" ||
    { echo "${out}"; return 1; }
  echo "kind-$1 deployment/${DEMO_DEPLOYMENT}: managed|synced-from|sync-target|source-cluster = ${out}"
  local managed synced target source
  IFS='|' read -r managed synced target source <<<"${out}"
  [[ "${managed}" == true && "${synced}" == tmc-workloads && "${target}" == "$1" && -n "${source}" ]]
}

# expect_upstream_ready N: the Deployment in the virtual cluster reports N ready replicas (summed from the copies).
expect_upstream_ready() {
  local ready
  ready="$(kubectl -n "${DEMO_NS}" get deployment "${DEMO_DEPLOYMENT}" -o jsonpath='{.status.readyReplicas}' 2>&1)"
  echo "virtual cluster deployment/${DEMO_DEPLOYMENT}: readyReplicas=${ready:-<none>} (expected $1)"
  [[ "${ready}" == "$1" ]]
}

# expect_stamped CLUSTER REGION: the transformation label-stamper put tmc.kcp.io/target=CLUSTER and
# tmc.kcp.io/region=REGION on the Deployment's copy there.
expect_stamped() {
  local out
  out="$(kubectl --context "kind-$1" -n "${DEMO_NS}" get deployment "${DEMO_DEPLOYMENT}" -o \
    jsonpath='{.metadata.labels.tmc\.kcp\.io/target}|{.metadata.labels.tmc\.kcp\.io/region}' 2>&1)" ||
    { echo "${out}"; return 1; }
  echo "kind-$1 deployment/${DEMO_DEPLOYMENT}: tmc.kcp.io/target|tmc.kcp.io/region = ${out}"
  [[ "${out}" == "$1|$2" ]]
}

# show_distribution: a small table of replicas per cluster.
show_distribution() {
  local c
  printf '    %-10s %s\n' CLUSTER "REPLICAS (deployment/${DEMO_DEPLOYMENT})"
  for c in kcp-west kcp-east; do
    printf '    %-10s %s\n' "${c}" "$(replicas_on "${c}")"
  done
}

# show_cluster CLUSTER: the brief's `kubectl --context kind-CLUSTER get all -n demo-app --show-labels`.
show_cluster() {
  show kubectl --context "kind-$1" get all,configmaps -n "${DEMO_NS}" --show-labels -l app=demo-web || true
}
