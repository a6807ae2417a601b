#!/usr/bin/env bash
# Builds the example policies to wasm32-wasip1 and copies <name>.wasm into an
# output directory (default target/policies/), then the test fixtures of
# policy-host/tests/fixtures/ that are real Rust and Go programs (modules that
# sleep; they are no policies, only policy-host/tests/blocking.rs loads them).
#
# Usage: hack/build-policies.sh [--out DIR]
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$root/target/policies"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --out) out="${2:?--out needs a directory}"; shift 2 ;;
    -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (usage: hack/build-policies.sh [--out DIR])" >&2; exit 2 ;;
  esac
done
mkdir -p "$out"
out="$(cd "$out" && pwd)"

rust_policies=(location-affinity replica-spread label-stamper active-passive)

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1; then
  echo "==> adding the wasm32-wasip1 target"
  rustup target add wasm32-wasip1
fi

pkgs=()
for p in "${rust_policies[@]}"; do pkgs+=(-p "$p"); done
echo "==> cargo build --profile policy --target wasm32-wasip1 ${pkgs[*]}"
(cd "$root" && cargo build --profile policy --target wasm32-wasip1 "${pkgs[@]}")

target_dir="${CARGO_TARGET_DIR:-$root/target}"
for p in "${rust_policies[@]}"; do
  src="$target_dir/wasm32-wasip1/policy/${p//-/_}.wasm"
  [[ -f "$src" ]] || { echo "missing build output $src" >&2; exit 1; }
  cp "$src" "$out/$p.wasm"
done

go_build="$root/policies/location-affinity-go/build.sh"
if [[ -f "$go_build" ]]; then
  echo "==> $go_build $out"
  bash "$go_build" "$out"
else
  echo "==> skipping the Go policy ($go_build not found)"
fi

# Test fixtures: sleepy-rust.wasm / sleepy-go.wasm sleep when their settings
# say so; the -init variants also sleep 10 s in _initialize.
fixtures="$root/policy-host/tests/fixtures"
sleepy_rust="$target_dir/wasm32-wasip1/policy/sleepy_rust_fixture.wasm"
for variant in "" "-init"; do
  features=()
  [[ -n "$variant" ]] && features=(--features sleep-in-init)
  echo "==> test fixture sleepy-rust$variant"
  (cd "$root" && cargo build --profile policy --target wasm32-wasip1 -p sleepy-rust-fixture "${features[@]}")
  cp "$sleepy_rust" "$out/sleepy-rust$variant.wasm"
done
if command -v go >/dev/null; then
  for variant in "" "-init"; do
    init_ms=0
    [[ -n "$variant" ]] && init_ms=10000
    echo "==> test fixture sleepy-go$variant"
    (cd "$fixtures/sleepy-go" && GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -trimpath \
      -ldflags="-s -w -X main.initSleepMs=$init_ms" -o "$out/sleepy-go$variant.wasm" .)
  done
else
  echo "==> skipping the Go test fixtures (go not found)"
fi

echo "==> modules in $out"
for f in "$out"/*.wasm; do
  [[ -e "$f" ]] || continue
  printf '  %-28s %8d bytes\n' "$(basename "$f")" "$(stat -c %s "$f")"
done
