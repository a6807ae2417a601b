// Package transform turns a Go function into the tmc_transform entry point of
// a policy module. Registering a function is what makes the module export
// tmc_transform: a module that only places does not import this package.
package transform

import (
	"errors"

	"tmc.dev/policy-sdk/go/policy"
)

// Func edits the labels and annotations of one target's copy of a workload.
type Func func(policy.TransformRequest) (policy.TransformResult, error)

var registered Func

var errNotRegistered = errors.New("no transformation function registered: call transform.Register from an init function")

// Register makes fn answer tmc_transform. Call it from an init function (a
// policy module runs package initialization, never main).
func Register(fn Func) {
	registered = fn
}

// Handle answers one tmc_transform call: a TransformRequest in, the response
// envelope of a TransformResult out.
func Handle(input []byte) []byte {
	fn := registered
	if fn == nil {
		fn = func(policy.TransformRequest) (policy.TransformResult, error) {
			return policy.TransformResult{}, errNotRegistered
		}
	}
	return policy.Handle("tmc_transform", input, fn)
}
