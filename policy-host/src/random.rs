//! The host's `wasi_snapshot_preview1::random_get`, shadowing wasmtime-wasi's.
//!
//! Both serve the same fixed byte sequence (256 pseudo-random bytes, cycled),
//! but this one knows how far the guest has read: a pre-initialized snapshot
//! (see [`crate::snapshot`]) records the position `_initialize` reached, and
//! every evaluation of the snapshot goes on from there, so the guest reads
//! the very bytes it would read after running `_initialize` itself.

use wasmtime::{Caller, Extern, Linker};

const MODULE: &str = "wasi_snapshot_preview1";
const ERRNO_SUCCESS: i32 = 0;
const ERRNO_FAULT: i32 = 21;

/// The guest's read position in the fixed random sequence.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RandomStream {
    position: u64,
}

impl RandomStream {
    /// A stream whose next byte is byte `position` of the sequence.
    pub fn at(position: u64) -> Self {
        Self { position }
    }

    /// How many bytes were read since the sequence's start.
    pub fn position(self) -> u64 {
        self.position
    }

    /// Fills `buf` with the next bytes of the sequence.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for byte in buf {
            *byte = SEED[(self.position % SEED.len() as u64) as usize];
            self.position = self.position.wrapping_add(1);
        }
    }
}

/// Replaces the linker's `random_get` (WASI must be linked already) with one
/// reading the store's [`RandomStream`], which `stream` finds in the store's
/// data.
pub(crate) fn shadow<T: 'static>(
    linker: &mut Linker<T>,
    stream: fn(&mut T) -> &mut RandomStream,
) -> anyhow::Result<()> {
    linker.allow_shadowing(true);
    let result = linker
        .func_wrap(
            MODULE,
            "random_get",
            move |caller: Caller<'_, T>, ptr: i32, len: i32| random_get(caller, stream, ptr, len),
        )
        .map(|_| ())
        .map_err(|e| anyhow::anyhow!("cannot link the host's random_get: {e}"));
    linker.allow_shadowing(false);
    result
}

/// `random_get(buf, buf_len) -> errno`.
fn random_get<T: 'static>(
    mut caller: Caller<'_, T>,
    stream: fn(&mut T) -> &mut RandomStream,
    ptr: i32,
    len: i32,
) -> i32 {
    let Some(memory) = caller.get_export("memory").and_then(Extern::into_memory) else {
        return ERRNO_FAULT;
    };
    let (data, state) = memory.data_and_store_mut(&mut caller);
    let start = ptr as u32 as usize;
    match start
        .checked_add(len as u32 as usize)
        .and_then(|end| data.get_mut(start..end))
    {
        Some(buf) => {
            stream(state).fill(buf);
            ERRNO_SUCCESS
        }
        None => ERRNO_FAULT,
    }
}

/// 256 fixed pseudo-random bytes (splitmix64 from a constant seed).
pub(crate) static SEED: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
    let mut state: u64 = 0x746d_6370_6f6c_6963;
    let mut out = Vec::with_capacity(256);
    while out.len() < 256 {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out
});

#[cfg(test)]
mod tests {
    use wasmtime_wasi::Deterministic;

    use super::*;

    /// The stream serves what wasmtime-wasi's `Deterministic` over the same
    /// seed served before this module shadowed `random_get`, from any
    /// position on.
    #[test]
    fn the_stream_is_the_cycled_seed_and_resumes_where_it_stopped() {
        use wasmtime_wasi::Rng as _;
        let mut reference = Deterministic::new(SEED.to_vec());
        let mut expected = vec![0; 700];
        reference.fill_bytes(&mut expected);

        let mut stream = RandomStream::default();
        let mut first = vec![0; 300];
        stream.fill(&mut first);
        assert_eq!(first, expected[..300]);
        let mut resumed = RandomStream::at(stream.position());
        let mut rest = vec![0; 400];
        resumed.fill(&mut rest);
        assert_eq!(rest, expected[300..]);
        assert_eq!(resumed.position(), 700);
    }
}
