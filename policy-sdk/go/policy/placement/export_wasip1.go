//go:build wasip1

package placement

import "tmc.dev/policy-sdk/go/policy"

//go:wasmexport tmc_place
func tmcPlace(ptr, size int32) int64 {
	return policy.Invoke(ptr, size, Handle)
}
