# shellcheck shell=bash
# Builds what the demo needs when it is missing: the test bed binaries (kcp, kube-apiserver, etcd, kwok,
# kubectl, ...), tmcd, tmc-syncer, tmc-testbed, and the example policy modules. Needs ROOT and common.sh.

# Where cargo puts binaries.
target_dir() { echo "${CARGO_TARGET_DIR:-${ROOT}/target}"; }

# build_testbed_binaries: prints nothing; sets BIN_DIR (the bin dir holding kubectl & co.).
build_testbed_binaries() {
  BIN_DIR="$("${ROOT}/hack/testbed/build.sh" --print-bin-dir)" || die "hack/testbed/build.sh --print-bin-dir failed"
  local missing=() b
  for b in kcp kube-apiserver kube-controller-manager kube-scheduler kubectl etcd kwok; do
    [[ -x "${BIN_DIR}/${b}" ]] || missing+=("${b}")
  done
  if ((${#missing[@]} == 0)); then
    ok "test bed binaries present in ${BIN_DIR}"
    return 0
  fi
  info "building missing test bed binaries (${missing[*]}) with hack/testbed/build.sh: from source, this takes a while"
  "${ROOT}/hack/testbed/build.sh" || die "hack/testbed/build.sh failed (see its output above; it needs Go and the Go module proxy)"
  for b in "${missing[@]}"; do
    [[ -x "${BIN_DIR}/${b}" ]] || die "hack/testbed/build.sh finished but ${BIN_DIR}/${b} is missing"
  done
  ok "test bed binaries built in ${BIN_DIR}"
}

# build_tmc_binaries: cargo build of tmcd, tmc-syncer and tmc-testbed. Always asked: cargo rebuilds only what is
# missing or stale (a stale binary would demo old code), and is a no-op otherwise.
# Sets TMCD, TMC_SYNCER, TMC_TESTBED.
build_tmc_binaries() {
  local dir b
  dir="$(target_dir)/debug"
  TMCD="${dir}/tmcd"
  # TMC_DEMO_TMC_SYNCER: another pull-mode agent binary (e.g. to try the push fallback with /bin/false).
  TMC_SYNCER="${TMC_DEMO_TMC_SYNCER:-${dir}/tmc-syncer}"
  TMC_TESTBED="${dir}/tmc-testbed"
  info "cargo build -p tmc-daemon -p tmc-syncer -p tmc-tests (tmcd, tmc-syncer, tmc-testbed; builds what is missing or stale, waits for the shared target lock)"
  (cd "${ROOT}" && cargo build -p tmc-daemon -p tmc-syncer -p tmc-tests --bin tmcd --bin tmc-syncer --bin tmc-testbed) ||
    die "cargo build of tmcd, tmc-syncer and tmc-testbed failed (see the compiler output above)"
  for b in "${TMCD}" "${TMC_SYNCER}" "${TMC_TESTBED}"; do
    [[ -x "${b}" ]] || die "cargo build finished but ${b} is missing"
  done
  ok "tmcd, tmc-syncer and tmc-testbed are up to date in ${dir}"
}

# build_policies FORCE NAME...: hack/build-policies.sh when a target/policies/NAME.wasm is missing or older than
# its crate or the SDK (or FORCE=1). Sets POLICY_SRC (the directory of the built modules).
build_policies() {
  local force="$1" missing=() p wasm
  shift
  POLICY_SRC="${ROOT}/target/policies"
  for p in "$@"; do
    wasm="${POLICY_SRC}/${p}.wasm"
    if [[ ! -f "${wasm}" ]] ||
      [[ -n "$(find "${ROOT}/policies/${p}" "${ROOT}/policy-sdk/src" -type f -newer "${wasm}" -print -quit 2>/dev/null)" ]]; then
      missing+=("${p}")
    fi
  done
  if [[ "${force}" != 1 && ${#missing[@]} -eq 0 ]]; then
    ok "policy modules present in ${POLICY_SRC}: $*"
    return 0
  fi
  info "building the example policies with hack/build-policies.sh (missing or stale: ${missing[*]:-none})"
  "${ROOT}/hack/build-policies.sh" --out "${POLICY_SRC}" || die "hack/build-policies.sh failed (see its output above)"
  for p in "$@"; do
    [[ -f "${POLICY_SRC}/${p}.wasm" ]] ||
      die "hack/build-policies.sh did not produce ${POLICY_SRC}/${p}.wasm (is ${p} in its rust_policies list?)"
  done
  ok "policy modules built in ${POLICY_SRC}"
}
