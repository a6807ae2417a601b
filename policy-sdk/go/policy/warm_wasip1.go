//go:build wasip1

package policy

// Warming the allocator during _initialize, which the host snapshots.
//
// The host instantiates a snapshot of the module taken after _initialize for
// every evaluation, so whatever the runtime does the first time an
// allocation of some size class happens (taking a fresh span from the page
// heap into the per-P cache) it would do again in every evaluation. Allocating
// one object of every small size class here, once, pointer-free and with
// pointers, leaves a span with free slots for each class in the snapshot.

// warmSizes are the runtime's size classes up to 8 KiB (internal/runtime/gc,
// unchanged since Go 1.20); those up to 2 KiB are warmed for objects with and
// without pointers, the larger ones (the input, its string copy, the
// answer's buffer) without.
var warmSizes = [...]uint16{8, 16, 24, 32, 48, 64, 80, 96, 112, 128, 144, 160, 176, 192, 208, 224, 240, 256, 288,
	320, 352, 384, 416, 448, 480, 512, 576, 640, 704, 768, 896, 1024, 1152, 1280, 1408, 1536, 1792, 2048,
	2304, 2688, 3072, 3200, 3456, 4096, 4864, 5376, 6144, 6528, 6784, 6912, 8192}

var warmSink any

func init() {
	for _, size := range warmSizes {
		warmSink = make([]byte, size)
		if size <= 2048 {
			warmSink = make([]*byte, size/8)
		}
	}
	warmSink = nil
	growStack(32)
}

// growStack uses about n KiB of stack.
//
//go:noinline
func growStack(n int) byte {
	var buf [1024]byte
	buf[n%len(buf)] = byte(n)
	if n > 0 {
		return growStack(n-1) + buf[(n*7)%len(buf)]
	}
	return buf[0]
}
