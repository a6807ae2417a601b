//! The host's `wasi_snapshot_preview1::poll_oneoff`, shadowing wasmtime-wasi's.
//!
//! wasmtime-wasi's version really waits (`std::thread::sleep`, or a tokio
//! timer) outside fuel and epoch interruption, so a guest that sleeps would
//! hold its evaluation thread, and during a load the reload lock, for as long
//! as it asks. Ours never waits:
//!
//! - a clock subscription advances the store's [`VirtualClock`] to its
//!   deadline and fires at once (sleeping takes no real time; a guest that
//!   sleeps in a loop burns fuel and meets the epoch deadline like any loop);
//! - stdin is always at end of file: a read subscription on fd 0 is ready with
//!   0 bytes and `hangup`; stdout and stderr are always writable;
//! - any other descriptor is ready with `EBADF`; an unknown clock with `EINVAL`.
//!
//! Advancing virtual time rather than trapping keeps well-behaved guests
//! working: the Go runtime sleeps internally (`usleep` in its scheduler and
//! GC, timers of background goroutines) and Rust's `std::thread::sleep`
//! panics on any answer but a fired clock.

use wasmtime::{Caller, Extern, Linker};

use crate::clock::VirtualClock;
use crate::sandbox::StoreState;

const MODULE: &str = "wasi_snapshot_preview1";

/// Size of a `subscription` and of an `event` in guest memory.
const SUBSCRIPTION_SIZE: usize = 48;
const EVENT_SIZE: usize = 32;

const ERRNO_SUCCESS: u16 = 0;
const ERRNO_BADF: u16 = 8;
const ERRNO_FAULT: u16 = 21;
const ERRNO_INVAL: u16 = 28;

const EVENTTYPE_CLOCK: u8 = 0;
const EVENTTYPE_FD_READ: u8 = 1;
const EVENTTYPE_FD_WRITE: u8 = 2;

const CLOCKID_REALTIME: u32 = 0;
const CLOCKID_MONOTONIC: u32 = 1;
const SUBCLOCKFLAGS_ABSTIME: u16 = 1;
const EVENTRWFLAGS_HANGUP: u16 = 1;

/// Replaces the linker's `poll_oneoff` (WASI must be linked already).
pub(crate) fn shadow(linker: &mut Linker<StoreState>) -> anyhow::Result<()> {
    linker.allow_shadowing(true);
    let result = linker
        .func_wrap(MODULE, "poll_oneoff", poll_oneoff)
        .map(|_| ())
        .map_err(|e| anyhow::anyhow!("cannot link the host's poll_oneoff: {e}"));
    linker.allow_shadowing(false);
    result
}

/// `poll_oneoff(in, out, nsubscriptions, nevents_out) -> errno`.
fn poll_oneoff(
    mut caller: Caller<'_, StoreState>,
    subs_ptr: i32,
    events_ptr: i32,
    nsubs: i32,
    nevents_ptr: i32,
) -> i32 {
    let Some(memory) = caller.get_export("memory").and_then(Extern::into_memory) else {
        return i32::from(ERRNO_FAULT);
    };
    let clock = caller.data_mut().clock().clone();
    let (data, _) = memory.data_and_store_mut(&mut caller);
    i32::from(
        match run(data, &clock, subs_ptr, events_ptr, nsubs, nevents_ptr) {
            Ok(()) => ERRNO_SUCCESS,
            Err(errno) => errno,
        },
    )
}

/// Reads the subscriptions, answers them, writes events and their count.
fn run(
    data: &mut [u8],
    clock: &VirtualClock,
    subs_ptr: i32,
    events_ptr: i32,
    nsubs: i32,
    nevents_ptr: i32,
) -> Result<(), u16> {
    let n = nsubs as u32 as usize;
    if n == 0 {
        return Err(ERRNO_INVAL);
    }
    let subs_bytes = slice(data, subs_ptr, n * SUBSCRIPTION_SIZE)?;
    let subs = subs_bytes
        .chunks_exact(SUBSCRIPTION_SIZE)
        .map(Subscription::decode)
        .collect::<Result<Vec<_>, _>>()?;
    // Check every output location before changing anything.
    slice(data, events_ptr, n * EVENT_SIZE)?;
    slice(data, nevents_ptr, 4)?;
    let (events, advance) = answer(&subs, clock.monotonic_ns(), clock.wall_ns());
    clock.advance(advance);
    let out = slice(data, events_ptr, events.len() * EVENT_SIZE)?;
    for (event, bytes) in events.iter().zip(out.chunks_exact_mut(EVENT_SIZE)) {
        event.encode(bytes);
    }
    let count = u32::try_from(events.len()).map_err(|_| ERRNO_INVAL)?;
    slice(data, nevents_ptr, 4)?.copy_from_slice(&count.to_le_bytes());
    Ok(())
}

/// `len` bytes of guest memory at `ptr`, or `EFAULT`.
fn slice(data: &mut [u8], ptr: i32, len: usize) -> Result<&mut [u8], u16> {
    let start = ptr as u32 as usize;
    start
        .checked_add(len)
        .and_then(|end| data.get_mut(start..end))
        .ok_or(ERRNO_FAULT)
}

/// One decoded `subscription`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Subscription {
    Clock {
        userdata: u64,
        id: u32,
        timeout: u64,
        absolute: bool,
    },
    FdRead {
        userdata: u64,
        fd: u32,
    },
    FdWrite {
        userdata: u64,
        fd: u32,
    },
}

impl Subscription {
    /// Layout: userdata u64 @0, tag u8 @8, union @16 (clock: id u32 @16,
    /// timeout u64 @24, precision u64 @32, flags u16 @40; fd: u32 @16).
    fn decode(b: &[u8]) -> Result<Self, u16> {
        let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or([0; 8]));
        let u32_at = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or([0; 4]));
        let userdata = u64_at(0);
        match b[8] {
            EVENTTYPE_CLOCK => Ok(Self::Clock {
                userdata,
                id: u32_at(16),
                timeout: u64_at(24),
                absolute: u16::from_le_bytes([b[40], b[41]]) & SUBCLOCKFLAGS_ABSTIME != 0,
            }),
            EVENTTYPE_FD_READ => Ok(Self::FdRead {
                userdata,
                fd: u32_at(16),
            }),
            EVENTTYPE_FD_WRITE => Ok(Self::FdWrite {
                userdata,
                fd: u32_at(16),
            }),
            _ => Err(ERRNO_INVAL),
        }
    }
}

/// One `event` to write back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Event {
    userdata: u64,
    error: u16,
    kind: u8,
    nbytes: u64,
    flags: u16,
}

impl Event {
    /// Layout: userdata u64 @0, error u16 @8, type u8 @10, nbytes u64 @16, flags u16 @24.
    fn encode(&self, b: &mut [u8]) {
        b.fill(0);
        b[0..8].copy_from_slice(&self.userdata.to_le_bytes());
        b[8..10].copy_from_slice(&self.error.to_le_bytes());
        b[10] = self.kind;
        b[16..24].copy_from_slice(&self.nbytes.to_le_bytes());
        b[24..26].copy_from_slice(&self.flags.to_le_bytes());
    }

    fn ready(userdata: u64, kind: u8, error: u16) -> Self {
        Self {
            userdata,
            error,
            kind,
            nbytes: 0,
            flags: 0,
        }
    }
}

/// The events of `subs` at virtual time `monotonic` / `wall` (ns), and how
/// far to advance the clock. Descriptor subscriptions are always ready, so
/// they are answered without advancing; otherwise time jumps to the earliest
/// clock deadline and every clock due by then fires.
fn answer(subs: &[Subscription], monotonic: u64, wall: u64) -> (Vec<Event>, u64) {
    let mut ready = Vec::new();
    let mut clocks = Vec::new();
    for sub in subs {
        match *sub {
            Subscription::FdRead { userdata, fd: 0 } => ready.push(Event {
                flags: EVENTRWFLAGS_HANGUP,
                ..Event::ready(userdata, EVENTTYPE_FD_READ, ERRNO_SUCCESS)
            }),
            Subscription::FdWrite {
                userdata,
                fd: 1 | 2,
            } => ready.push(Event {
                nbytes: 1,
                ..Event::ready(userdata, EVENTTYPE_FD_WRITE, ERRNO_SUCCESS)
            }),
            Subscription::FdRead { userdata, .. } => {
                ready.push(Event::ready(userdata, EVENTTYPE_FD_READ, ERRNO_BADF));
            }
            Subscription::FdWrite { userdata, .. } => {
                ready.push(Event::ready(userdata, EVENTTYPE_FD_WRITE, ERRNO_BADF));
            }
            Subscription::Clock {
                userdata,
                id,
                timeout,
                absolute,
            } => {
                let due = match (id, absolute) {
                    (CLOCKID_MONOTONIC | CLOCKID_REALTIME, false) => {
                        monotonic.saturating_add(timeout)
                    }
                    (CLOCKID_MONOTONIC, true) => timeout,
                    (CLOCKID_REALTIME, true) => {
                        monotonic.saturating_add(timeout.saturating_sub(wall))
                    }
                    _ => {
                        ready.push(Event::ready(userdata, EVENTTYPE_CLOCK, ERRNO_INVAL));
                        continue;
                    }
                };
                clocks.push((userdata, due));
            }
        }
    }
    if !ready.is_empty() {
        return (ready, 0);
    }
    let Some(earliest) = clocks.iter().map(|(_, due)| *due).min() else {
        return (ready, 0);
    };
    let now = earliest.max(monotonic);
    let fired = clocks
        .iter()
        .filter(|(_, due)| *due <= now)
        .map(|(userdata, _)| Event::ready(*userdata, EVENTTYPE_CLOCK, ERRNO_SUCCESS))
        .collect();
    (fired, now - monotonic)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn clock(userdata: u64, timeout: u64, absolute: bool) -> Subscription {
        Subscription::Clock {
            userdata,
            id: CLOCKID_MONOTONIC,
            timeout,
            absolute,
        }
    }

    #[test]
    fn a_relative_sleep_advances_virtual_time_and_fires() {
        let (events, advance) = answer(&[clock(7, 10 * SEC, false)], 5 * SEC, 0);
        assert_eq!(advance, 10 * SEC);
        assert_eq!(
            events,
            [Event::ready(7, EVENTTYPE_CLOCK, ERRNO_SUCCESS)],
            "the clock fired"
        );
    }

    #[test]
    fn the_earliest_clock_fires_alone() {
        let subs = [clock(1, 3 * SEC, false), clock(2, 9 * SEC, true)];
        let (events, advance) = answer(&subs, 5 * SEC, 0);
        assert_eq!(
            advance,
            3 * SEC,
            "absolute 9 s is 4 s away, relative 3 s first"
        );
        assert_eq!(events, [Event::ready(1, EVENTTYPE_CLOCK, ERRNO_SUCCESS)]);
    }

    #[test]
    fn a_past_absolute_deadline_fires_without_advancing() {
        let (events, advance) = answer(&[clock(1, SEC, true)], 5 * SEC, 0);
        assert_eq!(advance, 0);
        assert_eq!(events.len(), 1);
    }

    #[test]
    fn an_absolute_wall_clock_deadline_converts_to_virtual_time() {
        let sub = Subscription::Clock {
            userdata: 1,
            id: CLOCKID_REALTIME,
            timeout: 102 * SEC,
            absolute: true,
        };
        let (_, advance) = answer(&[sub], 5 * SEC, 100 * SEC);
        assert_eq!(advance, 2 * SEC);
    }

    #[test]
    fn stdin_is_at_eof_and_answers_before_any_clock() {
        let subs = [
            clock(1, 10 * SEC, false),
            Subscription::FdRead { userdata: 2, fd: 0 },
        ];
        let (events, advance) = answer(&subs, 0, 0);
        assert_eq!(advance, 0, "no time passes while a descriptor is ready");
        assert_eq!(
            events,
            [Event {
                flags: EVENTRWFLAGS_HANGUP,
                ..Event::ready(2, EVENTTYPE_FD_READ, ERRNO_SUCCESS)
            }]
        );
    }

    #[test]
    fn unknown_descriptors_and_clocks_are_errors_not_waits() {
        let subs = [
            Subscription::FdRead { userdata: 1, fd: 9 },
            Subscription::FdWrite { userdata: 2, fd: 9 },
            Subscription::Clock {
                userdata: 3,
                id: 2,
                timeout: SEC,
                absolute: false,
            },
        ];
        let (events, advance) = answer(&subs, 0, 0);
        assert_eq!(advance, 0);
        let errors: Vec<u16> = events.iter().map(|e| e.error).collect();
        assert_eq!(errors, [ERRNO_BADF, ERRNO_BADF, ERRNO_INVAL]);
    }

    #[test]
    fn run_checks_guest_memory_and_writes_events() {
        let clock_state = VirtualClock::default();
        let mut mem = vec![0u8; 256];
        // One relative 10 s monotonic sleep at offset 0, userdata 42.
        mem[0..8].copy_from_slice(&42u64.to_le_bytes());
        mem[8] = EVENTTYPE_CLOCK;
        mem[16..20].copy_from_slice(&CLOCKID_MONOTONIC.to_le_bytes());
        mem[24..32].copy_from_slice(&(10 * SEC).to_le_bytes());
        run(&mut mem, &clock_state, 0, 64, 1, 128).expect("answered");
        assert_eq!(clock_state.slept_ns(), 10 * SEC);
        assert_eq!(u64::from_le_bytes(mem[64..72].try_into().unwrap()), 42);
        assert_eq!(mem[74], EVENTTYPE_CLOCK);
        assert_eq!(u32::from_le_bytes(mem[128..132].try_into().unwrap()), 1);

        assert_eq!(
            run(&mut mem, &clock_state, 250, 64, 1, 128),
            Err(ERRNO_FAULT)
        );
        assert_eq!(run(&mut mem, &clock_state, 0, 64, 0, 128), Err(ERRNO_INVAL));
        mem[8] = 9;
        assert_eq!(run(&mut mem, &clock_state, 0, 64, 1, 128), Err(ERRNO_INVAL));
        assert_eq!(
            clock_state.slept_ns(),
            10 * SEC,
            "failed calls do not sleep"
        );
    }
}
