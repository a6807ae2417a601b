# shellcheck shell=bash
# The multi-tenant part of the demo (--tenants, step 8): tenant workspaces root:teams:a and root:teams:b bound
# to tmc's APIExport in root:tmc, tmcd in export mode, the same default/web in both. docs/tenancy.md has the
# model. Needs common.sh, ROOT, STATE (tenants.kubeconfig from the bed).

TENANTS=(a b)
TENANT_LABEL="tenancy.workload.kcp.io/logical-cluster"

# tk TENANT ARGS...: kubectl in tenant TENANT's workspace (context root:teams:TENANT of tenants.kubeconfig).
tk() {
  local tenant="$1"
  shift
  kubectl --kubeconfig "${STATE}/tenants.kubeconfig" --context "root:teams:${tenant}" "$@"
}

# logical_cluster TENANT: the logical cluster of the tenant's workspace (kcp.io/cluster of its objects).
logical_cluster() {
  tk "$1" get namespace default -o jsonpath='{.metadata.annotations.kcp\.io/cluster}'
}

# apply_in_tenant TENANT FILE: applies FILE in the tenant's workspace (retried by the caller's wait_until
# while the export's APIs are not served there yet).
apply_in_tenant() {
  tk "$1" apply --server-side --field-manager tmc-demo -f "$2"
}

# tenant_copies CLUSTER: tmc's Deployment copies of tenant workspaces on CLUSTER, one `namespace/name
# logical-cluster` line each.
tenant_copies() {
  kubectl --context "kind-$1" get deployments -A -l "${TENANT_LABEL}" \
    -o jsonpath="{range .items[*]}{.metadata.namespace}/{.metadata.name} {.metadata.labels.tenancy\.workload\.kcp\.io/logical-cluster}{'\n'}{end}"
}

# expect_tenant_copies CLUSTER LOGICAL_CLUSTER...: CLUSTER holds a copy of web for each logical cluster, each
# in a namespace of its own, and no other tenant copy.
expect_tenant_copies() {
  local cluster="$1" out want got
  shift
  out="$(tenant_copies "${cluster}" 2>&1)" || { echo "${out}"; return 1; }
  echo "kind-${cluster}: $(tr '\n' ';' <<<"${out}")"
  want="$(printf '%s\n' "$@" | sort)"
  got="$(awk '$1 ~ /\/web$/ {print $2}' <<<"${out}" | sort)"
  [[ "${got}" == "${want}" ]] || return 1
  # One namespace per tenant: as many distinct namespaces as copies.
  [[ "$(awk -F/ '{print $1}' <<<"${out}" | sort -u | wc -l)" == "$#" ]]
}

# expect_tenant_ready TENANT REPLICAS: the tenant's default/web reports REPLICAS ready (from its own copy).
expect_tenant_ready() {
  local ready
  ready="$(tk "$1" get deployment web -o jsonpath='{.status.readyReplicas}' 2>&1)"
  echo "root:teams:$1 deployment/web readyReplicas=${ready:-0}"
  [[ "${ready}" == "$2" ]]
}

# grant_tenants: the SyncTargetGrants of demo/manifests/tenants/grants.yaml.template, with the tenants'
# logical clusters filled in, applied in the inventory workspace.
grant_tenants() {
  local a b
  a="$(logical_cluster a)" && [[ -n "${a}" ]] || die "cannot read the logical cluster of root:teams:a"
  b="$(logical_cluster b)" && [[ -n "${b}" ]] || die "cannot read the logical cluster of root:teams:b"
  info "tenant a is logical cluster ${a}, tenant b ${b}"
  sed -e "s|@TENANT_A@|${a}|" -e "s|@TENANT_B@|${b}|" "${ROOT}/demo/manifests/tenants/grants.yaml.template" \
    >"${STATE}/grants.yaml"
  show kubectl apply -f "${STATE}/grants.yaml"
  show kubectl get synctargetgrants
}
