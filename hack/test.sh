#!/usr/bin/env bash
# Runs every check of the project, as CI does: formatting, lints, the policy
# modules, the test bed of real API servers, unit and integration tests.
#
#   ./hack/test.sh            everything
#   ./hack/test.sh --quick    skip the integration tests that start real servers
#
# Prerequisites it installs itself when missing: the wasm32-wasip1 Rust target
# and the test-bed binaries (kcp, kube-apiserver, etcd, kwok, ... built from the
# Go module proxy into a cache directory, see hack/testbed/build.sh).
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"

quick=false
for arg in "$@"; do
  case "$arg" in
    --quick) quick=true ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "test.sh: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "Rust toolchain: wasm32-wasip1 target, rustfmt, clippy"
rustup target list --installed | grep -qx wasm32-wasip1 || rustup target add wasm32-wasip1
rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt
rustup component list --installed | grep -q '^clippy' || rustup component add clippy

step "cargo fmt --check"
cargo fmt --all -- --check

step "policy modules (hack/build-policies.sh)"
./hack/build-policies.sh

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "no import cycle between the modules of any crate (hack/module-cycles.py)"
for src in api/src syncer/src daemon/src policy-host/src policy-sdk/src; do
  python3 hack/module-cycles.py "$src"
  python3 hack/module-cycles.py --top "$src"
done

if [ "$quick" = true ]; then
  step "unit tests (cargo test --workspace --lib --bins)"
  cargo test --workspace --lib --bins
  exit 0
fi

step "test bed binaries (hack/testbed/build.sh)"
./hack/testbed/build.sh

step "Go SDK and Go policy: gofmt, go vet, go test, the module in a WASI runtime"
go_dirs=(policy-sdk/go policies/location-affinity-go policy-host/tests/fixtures/sleepy-go)
unformatted=$(gofmt -l "${go_dirs[@]}")
[ -z "$unformatted" ] || { echo "gofmt: run 'gofmt -w' on: $unformatted" >&2; exit 1; }
for dir in "${go_dirs[@]}"; do
  (cd "$dir" && go vet ./... && go test ./...)
done
node --no-warnings policies/location-affinity-go/wasm_check.mjs

step "unit and integration tests (cargo test --workspace)"
cargo test --workspace --no-fail-fast
