#!/usr/bin/env bash
# Builds the pinned test bed binaries (kcp, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl,
# etcd, kwok) from Go module sources into a cache keyed by version, only when they are missing.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "${HERE}/versions.env"

CACHE_ROOT="${TMC_TESTBED_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tmc/testbed}"
SET_NAME="kcp-${KCP_VERSION}_kubernetes-${KUBERNETES_VERSION}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}"
BIN_DIR="${CACHE_ROOT}/${SET_NAME}/bin"
JOBS="${TMC_TESTBED_JOBS:-2}"

usage() {
  cat <<USAGE
Usage: hack/testbed/build.sh [--print-bin-dir] [--only NAME]... [--help]

Builds the test bed binaries pinned in hack/testbed/versions.env from Go module sources
(needs Go >= 1.24 and access to the Go module proxy), each set only when it is missing:
  kcp         ${KCP_VERSION}        -> ${CACHE_ROOT}/kcp-${KCP_VERSION}/bin/kcp
  kubernetes  ${KUBERNETES_VERSION} -> ${CACHE_ROOT}/kubernetes-${KUBERNETES_VERSION}/bin/{kube-apiserver,kube-controller-manager,kube-scheduler,kubectl}
  etcd        ${ETCD_VERSION}       -> ${CACHE_ROOT}/etcd-${ETCD_VERSION}/bin/etcd
  kwok        ${KWOK_VERSION}       -> ${CACHE_ROOT}/kwok-${KWOK_VERSION}/bin/kwok
Then links them all into one bin dir and prints it on the last line:
  ${BIN_DIR}

Options:
  --print-bin-dir  print only the bin dir (build nothing; the dir may not exist yet)
  --only NAME      build only this set (kcp, kubernetes, etcd, kwok); repeatable
  --help           this text

Environment:
  TMC_TESTBED_CACHE  cache root (default \${XDG_CACHE_HOME:-\$HOME/.cache}/tmc/testbed)
  TMC_TESTBED_JOBS   parallel Go compile jobs (default 2)
  TMC_TESTBED_BIN    (read by the Rust harness, not here) use binaries from this dir instead
USAGE
}

ONLY=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --help|-h) usage; exit 0 ;;
    --print-bin-dir) echo "${BIN_DIR}"; exit 0 ;;
    --only) [[ $# -ge 2 && "$2" =~ ^(kcp|kubernetes|etcd|kwok)$ ]] \
              || { echo "[testbed] --only needs a NAME: kcp, kubernetes, etcd or kwok" >&2; exit 2; }
            ONLY+=("$2"); shift 2 ;;
    *) echo "[testbed] unknown argument '$1'; see --help" >&2; exit 2 ;;
  esac
done

command -v go >/dev/null || { echo "[testbed] 'go' not found in PATH; install Go >= 1.24" >&2; exit 1; }

export GOFLAGS="${GOFLAGS:-} -mod=mod"
export GONOSUMDB="${GONOSUMDB:+${GONOSUMDB},}github.com/kcp-dev/*"
export GOMAXPROCS="${GOMAXPROCS:-${JOBS}}"
export CGO_ENABLED=0
# Kubernetes ships a go.work for its staging modules; the replace directives in go.mod do the same job.
export GOWORK=off
GO_BUILD=(go build -p "${JOBS}" -trimpath)

log() { echo "[testbed] $(date -u +%H:%M:%S) $*" >&2; }

wanted() {
  [[ ${#ONLY[@]} -eq 0 ]] && return 0
  local n; for n in "${ONLY[@]}"; do [[ "$n" == "$1" ]] && return 0; done
  return 1
}

# Prints the module cache dir of MODULE@VERSION, downloading it when needed.
mod_dir() {
  local json dir
  json="$(go mod download -json "$1@$2")" || { echo "[testbed] cannot download $1@$2 from the Go module proxy" >&2; return 1; }
  dir="$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' <<<"${json}")"
  [[ -n "${dir}" ]] || { echo "[testbed] no Dir for $1@$2: ${json}" >&2; return 1; }
  echo "${dir}"
}

# Copies module MODULE@VERSION into DEST as a writable tree.
copy_mod() {
  # Explicit checks: callers may run this under `if`, where `set -e` does not apply.
  local src; src="$(mod_dir "$1" "$2")" || return 1
  [[ -n "${src}" && -d "${src}" ]] || { echo "[testbed] module dir for $1@$2 not found" >&2; return 1; }
  mkdir -p "$3"
  cp -a "${src}/." "$3/"
  chmod -R u+w "$3"
}

# version_ldflags PREFIX_PKG... sets gitVersion/gitMajor/gitMinor for the given version packages.
version_ldflags() {
  local version="$1" major minor pkg out=""; shift
  major="${version#v}"; major="${major%%.*}"
  minor="${version#v*.}"; minor="${minor%%.*}"
  for pkg in "$@"; do
    out+=" -X ${pkg}.gitVersion=${version} -X ${pkg}.gitMajor=${major} -X ${pkg}.gitMinor=${minor} -X ${pkg}.gitTreeState=clean"
  done
  echo "${out}"
}

# Runs the build function $2 for set $1 when any of the binaries $3... is missing.
build_set() {
  local set="$1" fn="$2" dest; shift 2
  dest="${CACHE_ROOT}/${set}/bin"
  local missing=0 b
  for b in "$@"; do [[ -x "${dest}/${b}" ]] || missing=1; done
  if [[ ${missing} -eq 0 ]]; then log "${set}: cached in ${dest}"; return 0; fi
  local work="${CACHE_ROOT}/${set}/src" start=${SECONDS}
  rm -rf "${work}"; mkdir -p "${work}" "${dest}"
  "${fn}" "${work}" "${dest}"
  rm -rf "${work}"
  log "${set}: built in $((SECONDS - start)) s -> ${dest}"
}

build_etcd() {
  log "building etcd ${ETCD_VERSION} (cold build, ~1 min on 2 cores)..."
  # server/go.mod replaces its sibling modules with ../<dir>: lay them out the same way.
  local pair
  for pair in server:server/v3 api:api/v3 client/pkg:client/pkg/v3 client/v3:client/v3 pkg:pkg/v3; do
    copy_mod "go.etcd.io/etcd/${pair#*:}" "${ETCD_VERSION}" "$1/${pair%%:*}"
  done
  (cd "$1/server" && "${GO_BUILD[@]}" -ldflags="-s -w" -o "$2/etcd" .)
}

build_kubernetes() {
  log "building kube-apiserver, kube-controller-manager, kube-scheduler, kubectl ${KUBERNETES_VERSION} (cold build, ~9 min on 2 cores)..."
  copy_mod k8s.io/kubernetes "${KUBERNETES_VERSION}" "$1"
  local staging_version="v0.${KUBERNETES_VERSION#v1.}" x
  local staging; staging="$(sed -n 's#^[[:space:]]*k8s.io/\([a-z0-9-]*\) => ./staging/src/k8s.io/.*#\1#p' "$1/go.mod")"
  while read -r x; do
    log "  staging k8s.io/${x}@${staging_version}"
    if [[ "${x}" == sample-* ]] && ! copy_mod "k8s.io/${x}" "${staging_version}" "$1/staging/src/k8s.io/${x}" 2>/dev/null; then
      # Some sample modules are not published; the commands we build do not import them,
      # but the replace target still needs a go.mod.
      log "  k8s.io/${x}@${staging_version} not on the proxy; not needed by the commands built, using an empty module"
      mkdir -p "$1/staging/src/k8s.io/${x}"
      printf 'module k8s.io/%s\n\ngo 1.24.0\n' "${x}" > "$1/staging/src/k8s.io/${x}/go.mod"
    elif [[ "${x}" != sample-* ]]; then
      copy_mod "k8s.io/${x}" "${staging_version}" "$1/staging/src/k8s.io/${x}" \
        || { echo "[testbed] cannot fetch staging module k8s.io/${x}@${staging_version}" >&2; return 1; }
    fi
  done <<<"${staging}"
  local ld; ld="-s -w $(version_ldflags "${KUBERNETES_VERSION}" k8s.io/component-base/version k8s.io/client-go/pkg/version)"
  (cd "$1" && "${GO_BUILD[@]}" -ldflags="${ld}" -o "$2/" ./cmd/kube-apiserver ./cmd/kube-controller-manager ./cmd/kube-scheduler ./cmd/kubectl)
}

build_kcp() {
  log "building kcp ${KCP_VERSION} (cold build, ~10 min on 2 cores)..."
  copy_mod github.com/kcp-dev/kcp "${KCP_VERSION}" "$1"
  rm -rf "$1/sdk"
  copy_mod github.com/kcp-dev/kcp/sdk "${KCP_VERSION}" "$1/sdk"
  local kube=""
  if ! kube="$(cd "$1" && go list -m -f '{{.Version}}' k8s.io/kubernetes 2>/dev/null)"; then kube=""; fi
  # kcp reports "<kube version>+kcp-<kcp version>" like its Makefile does; the fork's pseudo-version is not semver-friendly.
  kube="${kube%%-*}"
  local ld="-s -w"
  if [[ "${kube}" =~ ^v[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
    ld+=" $(version_ldflags "${kube}+kcp-${KCP_VERSION}" k8s.io/component-base/version k8s.io/client-go/pkg/version)"
  fi
  (cd "$1" && "${GO_BUILD[@]}" -ldflags="${ld}" -o "$2/kcp" ./cmd/kcp)
}

build_kwok() {
  log "building kwok ${KWOK_VERSION} (cold build, ~5 min on 2 cores)..."
  copy_mod sigs.k8s.io/kwok "${KWOK_VERSION}" "$1"
  (cd "$1" && "${GO_BUILD[@]}" -ldflags="-s -w" -o "$2/kwok" ./cmd/kwok)
}

total_start=${SECONDS}
mkdir -p "${CACHE_ROOT}"
# Order: what the harness needs first (a physical cluster), then kcp, then kwok.
wanted etcd       && build_set "etcd-${ETCD_VERSION}" build_etcd etcd
wanted kubernetes && build_set "kubernetes-${KUBERNETES_VERSION}" build_kubernetes kube-apiserver kube-controller-manager kube-scheduler kubectl
wanted kcp        && build_set "kcp-${KCP_VERSION}" build_kcp kcp
wanted kwok       && build_set "kwok-${KWOK_VERSION}" build_kwok kwok

# One bin dir with links to every built binary, so the harness needs a single path.
mkdir -p "${BIN_DIR}"
link() { [[ -x "${CACHE_ROOT}/$1/bin/$2" ]] && ln -sfn "${CACHE_ROOT}/$1/bin/$2" "${BIN_DIR}/$2"; return 0; }
link "etcd-${ETCD_VERSION}" etcd
for b in kube-apiserver kube-controller-manager kube-scheduler kubectl; do link "kubernetes-${KUBERNETES_VERSION}" "$b"; done
link "kcp-${KCP_VERSION}" kcp
link "kwok-${KWOK_VERSION}" kwok
log "done in $((SECONDS - total_start)) s; bin dir:"
echo "${BIN_DIR}"
