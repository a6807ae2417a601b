// Command location-affinity-go is the Go twin of the Rust location-affinity
// placement policy: it chooses the ready and schedulable targets that match
// the placement's location selectors and the workload's tmc.kcp.io/regions
// annotation, orders them by location preference and splits replicas evenly.
//
// Build it with build.sh (GOOS=wasip1 GOARCH=wasm, -buildmode=c-shared); the
// module exports tmc_abi_version, tmc_alloc, tmc_validate_settings, tmc_place
// and tmc_test_vectors through the SDK packages.
package main

import (
	"tmc.dev/policy-sdk/go/policy"
	"tmc.dev/policy-sdk/go/policy/placement"
)

func init() {
	policy.RegisterSettings(validateSettings)
	placement.Register(place)
}

// main never runs in a c-shared module: the host calls _initialize, which
// runs the init functions above, then the exported entry points.
func main() {}

func validateSettings(req policy.SettingsRequest) (policy.SettingsVerdict, error) {
	settings, err := parseSettings(req.Settings)
	if err == nil {
		err = settings.validate()
	}
	if err != nil {
		return policy.SettingsVerdict{Valid: false, Message: err.Error()}, nil
	}
	return policy.SettingsVerdict{Valid: true}, nil
}

func place(req policy.PlacementRequest) (policy.PlacementDecision, error) {
	settings, err := parseSettings(req.Settings)
	if err != nil {
		return policy.PlacementDecision{}, err
	}
	return decide(req, settings), nil
}
