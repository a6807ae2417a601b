//go:build wasip1

package policy

import (
	"fmt"
	"slices"
	"unsafe"
)

// The memory protocol of the ABI, compiled only for wasm32-wasip1: the host
// asks tmc_alloc for a buffer, writes the JSON input into it and calls an
// entry point with (ptr, len); the entry point answers ptr<<32 | len of its
// JSON output. Buffers stay referenced from package variables so the garbage
// collector keeps them while the host reads or writes them.

// pinned holds the buffers handed out by tmc_alloc until an entry point consumes them.
var pinned [][]byte

// output holds the last answer while the host reads it.
var output []byte

//go:wasmexport tmc_abi_version
func tmcABIVersion() int32 {
	return ABIVersion
}

//go:wasmexport tmc_alloc
func tmcAlloc(size int32) int32 {
	if size < 0 {
		return 0
	}
	// Capacity at least 1 so that every buffer has its own address.
	buf := make([]byte, int(size), max(int(size), 1))
	pinned = append(pinned, buf)
	return int32(addressOf(buf))
}

//go:wasmexport tmc_validate_settings
func tmcValidateSettings(ptr, size int32) int64 {
	return Invoke(ptr, size, HandleValidateSettings)
}

//go:wasmexport tmc_test_vectors
func tmcTestVectors() int64 {
	return answer(HandleTestVectors())
}

// Invoke runs handle on the input the host wrote at ptr, a buffer from
// tmc_alloc of at least size bytes, and returns the answer's address and
// length packed as ptr<<32 | len. Entry points of other packages call it.
func Invoke(ptr, size int32, handle func([]byte) []byte) int64 {
	input, err := takeInput(uint32(ptr), size)
	if err != nil {
		return answer(ErrorEnvelope(err.Error()))
	}
	return answer(handle(input))
}

// takeInput finds the tmc_alloc buffer that starts at ptr and unpins it.
func takeInput(ptr uint32, size int32) ([]byte, error) {
	for i, buf := range pinned {
		if addressOf(buf) != ptr {
			continue
		}
		if size < 0 || int(size) > len(buf) {
			return nil, fmt.Errorf("input length %d does not fit the %d bytes allocated at %#x: pass the length given to tmc_alloc", size, len(buf), ptr)
		}
		pinned = slices.Delete(pinned, i, i+1)
		return buf[:size], nil
	}
	return nil, fmt.Errorf("input pointer %#x was not returned by tmc_alloc: allocate the input with tmc_alloc first", ptr)
}

// answer keeps out reachable and packs its address and length.
func answer(out []byte) int64 {
	output = out
	return int64(uint64(addressOf(out))<<32 | uint64(uint32(len(out))))
}

func addressOf(buf []byte) uint32 {
	return uint32(uintptr(unsafe.Pointer(unsafe.SliceData(buf))))
}
