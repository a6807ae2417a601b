//go:build wasip1

package transform

import "tmc.dev/policy-sdk/go/policy"

//go:wasmexport tmc_transform
func tmcTransform(ptr, size int32) int64 {
	return policy.Invoke(ptr, size, Handle)
}
