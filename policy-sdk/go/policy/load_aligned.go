//go:build !(wasm || amd64 || arm64 || 386 || ppc64le)

package policy

// load64 reads the 8 bytes of s at i (i+8 <= len(s)) as a little-endian number.
func load64(s string, i int) uint64 {
	_ = s[i+7]
	return uint64(s[i]) | uint64(s[i+1])<<8 | uint64(s[i+2])<<16 | uint64(s[i+3])<<24 |
		uint64(s[i+4])<<32 | uint64(s[i+5])<<40 | uint64(s[i+6])<<48 | uint64(s[i+7])<<56
}
