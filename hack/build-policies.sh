#!/usr/bin/env bash
# Builds the example policies to wasm32-wasip1 and copies <name>.wasm into an
# output directory (default target/policies/).
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

echo "==> modules in $out"
for f in "$out"/*.wasm; do
  [[ -e "$f" ]] || continue
  printf '  %-28s %8d bytes\n' "$(basename "$f")" "$(stat -c %s "$f")"
done
