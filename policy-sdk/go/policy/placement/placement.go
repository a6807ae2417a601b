// Package placement turns a Go function into the tmc_place entry point of a
// policy module. Registering a function is what makes the module export
// tmc_place: a module that only transforms does not import this package.
package placement

import (
	"errors"

	"tmc.dev/policy-sdk/go/policy"
)

// Func decides where a workload goes. Return an error only when the policy
// cannot decide (for example malformed settings); "place nowhere" is a
// decision with no targets and a reason.
type Func func(policy.PlacementRequest) (policy.PlacementDecision, error)

var registered Func

var errNotRegistered = errors.New("no placement function registered: call placement.Register from an init function")

// Register makes fn answer tmc_place. Call it from an init function (a policy
// module runs package initialization, never main).
func Register(fn Func) {
	registered = fn
}

// Handle answers one tmc_place call: a PlacementRequest in, the response
// envelope of a PlacementDecision out.
func Handle(input []byte) []byte {
	fn := registered
	if fn == nil {
		fn = func(policy.PlacementRequest) (policy.PlacementDecision, error) {
			return policy.PlacementDecision{}, errNotRegistered
		}
	}
	return policy.Handle("tmc_place", input, fn)
}
