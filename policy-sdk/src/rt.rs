//! Memory glue between the wasm exports and [`crate::guest`]. Used by the
//! `export_*!` macros only; this is the one place with `unsafe`.
//!
//! A fresh instance serves each evaluation and is discarded after it (ABI
//! section 1.2), so input and output buffers are deliberately leaked.

/// `tmc_alloc`: a buffer of `len` bytes the host writes the input into.
pub fn alloc(len: i32) -> i32 {
    let len = usize::try_from(len).unwrap_or(0);
    let buf: &'static mut [u8] = Vec::leak(vec![0u8; len.max(1)]);
    // Addresses are 32-bit on wasm32; natively the glue is never called.
    buf.as_mut_ptr() as usize as i32
}

/// Runs an entry point on the input at `ptr`/`len` and packs its output location.
pub fn call(ptr: i32, len: i32, entry: fn(&[u8]) -> Vec<u8>) -> i64 {
    let len = usize::try_from(len).unwrap_or(0);
    let input: &[u8] = if len == 0 || ptr == 0 {
        &[]
    } else {
        // SAFETY: the host wrote `len` bytes at `ptr`, a buffer this module
        // returned from `tmc_alloc(len)` and never touches again.
        unsafe { std::slice::from_raw_parts(ptr as u32 as usize as *const u8, len) }
    };
    output(entry(input))
}

/// Leaks `bytes` and returns `(ptr << 32) | len`.
pub fn output(bytes: Vec<u8>) -> i64 {
    let out: &'static [u8] = Vec::leak(bytes);
    let ptr = out.as_ptr() as usize as u64 & 0xffff_ffff;
    let len = out.len() as u64 & 0xffff_ffff;
    ((ptr << 32) | len) as i64
}
