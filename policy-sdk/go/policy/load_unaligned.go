//go:build wasm || amd64 || arm64 || 386 || ppc64le

package policy

import "unsafe"

// load64 reads the 8 bytes of s at i (i+8 <= len(s)) in one unaligned load,
// as a little-endian number on little-endian machines; only which bytes are
// special matters to the caller, and it reads them back from s.
func load64(s string, i int) uint64 {
	_ = s[i+7]
	return *(*uint64)(unsafe.Add(unsafe.Pointer(unsafe.StringData(s)), i))
}
