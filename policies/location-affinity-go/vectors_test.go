package main

import (
	"errors"
	"io/fs"
	"os"
	"testing"

	"tmc.dev/policy-sdk/go/policytest"
)

// The shared vectors the Rust twin and the wasmtime host also run.
func TestSharedVectors(t *testing.T) {
	policytest.RunVectorsFile(t, "../testdata/location-affinity-vectors.json")
}

// The Rust twin's own vectors: the two implementations must agree on them too.
func TestRustTwinVectors(t *testing.T) {
	const path = "../location-affinity/vectors.json"
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		t.Skipf("%s is absent: the Rust twin ships no vectors", path)
	}
	policytest.RunVectorsFile(t, path)
}
