#!/usr/bin/env bash
# Builds the Go location-affinity policy into <out>/location-affinity-go.wasm
# and prints its size. <out> defaults to target/policies; a relative <out> is
# taken from the repository root.
#
# Usage: policies/location-affinity-go/build.sh [OUT_DIR]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${1:-target/policies}"
[[ "$out" = /* ]] || out="$root/$out"

command -v go >/dev/null || { echo "go not found: install Go 1.24 or newer (go:wasmexport)" >&2; exit 1; }

# go:embed cannot reach ../testdata, so the shared vectors are copied next to
# main.go (the copy is git-ignored) and shipped through tmc_test_vectors.
cp "$root/policies/testdata/location-affinity-vectors.json" "$here/vectors.json"

mkdir -p "$out"
wasm="$out/location-affinity-go.wasm"
# -s -w drop the symbol table and DWARF (about 2% of the module).
(cd "$here" && GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -trimpath -ldflags='-s -w' -o "$wasm" .)
printf '%s %d bytes\n' "$wasm" "$(stat -c %s "$wasm")"
