//go:build wasip1

package main

import (
	_ "embed"

	"tmc.dev/policy-sdk/go/policy"
)

// vectors.json is copied from ../testdata/location-affinity-vectors.json by
// build.sh; the host runs these cases before activating the module.
//
//go:embed vectors.json
var vectors []byte

func init() {
	policy.RegisterTestVectors(vectors)
}
