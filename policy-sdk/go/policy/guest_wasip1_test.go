//go:build wasip1

package policy

import (
	"strings"
	"testing"
)

// Run with: GOOS=wasip1 GOARCH=wasm go test -exec "node --no-warnings $PWD/hack/wasip1-exec.mjs" ./...

// written returns a tmc_alloc buffer holding input, as the host fills it.
func written(t *testing.T, input string) (ptr, size int32) {
	t.Helper()
	ptr = tmcAlloc(int32(len(input)))
	if ptr == 0 {
		t.Fatalf("tmc_alloc(%d) failed", len(input))
	}
	copy(pinned[len(pinned)-1], input)
	return ptr, int32(len(input))
}

// unpack checks that packed points at the kept answer and returns it.
func unpack(t *testing.T, packed int64) string {
	t.Helper()
	ptr, size := uint32(uint64(packed)>>32), uint32(packed)
	if ptr != addressOf(output) || int(size) != len(output) {
		t.Fatalf("answer packed as %#x/%d, kept at %#x/%d", ptr, size, addressOf(output), len(output))
	}
	return string(output)
}

func TestAllocGivesDistinctBuffers(t *testing.T) {
	a, b, empty := tmcAlloc(8), tmcAlloc(8), tmcAlloc(0)
	if a == 0 || b == 0 || empty == 0 || a == b || b == empty {
		t.Errorf("tmc_alloc gave %#x, %#x, %#x", a, b, empty)
	}
	if got := tmcAlloc(-1); got != 0 {
		t.Errorf("tmc_alloc(-1) = %#x, want 0 (cannot allocate)", got)
	}
	if tmcABIVersion() != 1 {
		t.Errorf("tmc_abi_version() = %d", tmcABIVersion())
	}
}

func TestInvokeReadsTheAllocatedInput(t *testing.T) {
	ptr, size := written(t, `{"settings":{}}`)
	if got := unpack(t, tmcValidateSettings(ptr, size)); got != `{"ok":{"valid":true}}` {
		t.Errorf("answer %s", got)
	}
	// The buffer was consumed: the same pointer is now foreign.
	if got := unpack(t, tmcValidateSettings(ptr, size)); !strings.Contains(got, "was not returned by tmc_alloc") {
		t.Errorf("second use of a buffer: %s", got)
	}
}

func TestInvokeRefusesBadPointersAndLengths(t *testing.T) {
	if got := unpack(t, tmcValidateSettings(12345, 2)); !strings.Contains(got, "input pointer 0x3039 was not returned by tmc_alloc") {
		t.Errorf("foreign pointer: %s", got)
	}
	ptr, size := written(t, `{}`)
	if got := unpack(t, tmcValidateSettings(ptr, size+1)); !strings.Contains(got, "input length 3 does not fit the 2 bytes") {
		t.Errorf("oversized length: %s", got)
	}
}

func TestTestVectorsExport(t *testing.T) {
	if got := unpack(t, tmcTestVectors()); got != `{"ok":[]}` {
		t.Errorf("tmc_test_vectors without vectors: %s", got)
	}
}
