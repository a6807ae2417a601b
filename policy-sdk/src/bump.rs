//! The guests' global allocator: a bump allocator that never frees.
//!
//! The host runs every evaluation in a fresh instance and discards it (ABI
//! section 1.2), so freeing is wasted work: allocation is a pointer bump and
//! `dealloc` does nothing. It first serves from a zero-initialized arena in
//! the module's own memory image (`.bss`, part of the initial memory, so a
//! typical evaluation never executes `memory.grow`: growing costs the host two
//! `mprotect` calls and TLB shootdowns per instance), then takes memory above
//! whatever the module has and grows linear memory (capped by the host) as
//! needed. Enabled for `target_arch = "wasm32"` by the default feature
//! `bump-alloc`.

use core::alloc::{GlobalAlloc, Layout};
use core::arch::wasm32;
use core::cell::{Cell, UnsafeCell};
use core::ptr::null_mut;

const PAGE: usize = 65_536;

/// Size of the arena in the initial memory: a placement over tens of targets
/// allocates a few tens of KiB. Untouched pages cost the host nothing.
const ARENA: usize = 512 << 10;

#[repr(C, align(16))]
struct Arena(UnsafeCell<[u8; ARENA]>);

// SAFETY: wasm32 guests are single-threaded (no shared memory in the ABI);
// only the allocator hands out parts of the arena, each part once.
unsafe impl Sync for Arena {}

static ARENA_BYTES: Arena = Arena(UnsafeCell::new([0; ARENA]));

/// Bump allocator over the tail of linear memory 0.
pub struct BumpAlloc {
    next: Cell<usize>,
    end: Cell<usize>,
}

// SAFETY: wasm32 guests are single-threaded (no shared memory in the ABI).
unsafe impl Sync for BumpAlloc {}

impl BumpAlloc {
    /// An allocator that takes memory on first use.
    pub const fn new() -> Self {
        Self {
            next: Cell::new(0),
            end: Cell::new(0),
        }
    }

    /// Makes `[next, next+size)` available at `align`, growing memory if needed.
    fn reserve(&self, size: usize, align: usize) -> Option<usize> {
        if self.end.get() == 0 {
            // First use: the arena.
            let base = ARENA_BYTES.0.get() as usize;
            self.next.set(base);
            self.end.set(base + ARENA);
        }
        let start = self.next.get().checked_add(align - 1)? & !(align - 1);
        let stop = start.checked_add(size)?;
        if stop <= self.end.get() {
            self.next.set(stop);
            return Some(start);
        }
        // Past the arena, or someone else (e.g. libc) grew memory: start
        // above the end of memory.
        let current_end = wasm32::memory_size(0) * PAGE;
        if current_end != self.end.get() {
            self.next.set(current_end);
            self.end.set(current_end);
            return self.reserve_grown(size, align);
        }
        self.reserve_grown(size, align)
    }

    fn reserve_grown(&self, size: usize, align: usize) -> Option<usize> {
        let start = self.next.get().checked_add(align - 1)? & !(align - 1);
        let stop = start.checked_add(size)?;
        if stop > self.end.get() {
            let pages = (stop - self.end.get()).div_ceil(PAGE).max(16);
            if wasm32::memory_grow(0, pages) == usize::MAX {
                return None;
            }
            self.end.set(self.end.get() + pages * PAGE);
        }
        self.next.set(stop);
        Some(start)
    }
}

impl Default for BumpAlloc {
    fn default() -> Self {
        Self::new()
    }
}

unsafe impl GlobalAlloc for BumpAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.reserve(layout.size(), layout.align())
            .map_or(null_mut(), |addr| addr as *mut u8)
    }

    unsafe fn dealloc(&self, _ptr: *mut u8, _layout: Layout) {}

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let addr = ptr as usize;
        // The last allocation grows in place when memory allows.
        if addr + layout.size() == self.next.get() && addr + new_size <= self.end.get() {
            self.next.set(addr + new_size);
            return ptr;
        }
        if new_size <= layout.size() {
            return ptr;
        }
        // SAFETY: same alignment as `layout`, new_size is non-zero (>= old size).
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both regions are valid for layout.size() bytes and distinct.
            unsafe { core::ptr::copy_nonoverlapping(ptr, new, layout.size()) };
        }
        new
    }
}
