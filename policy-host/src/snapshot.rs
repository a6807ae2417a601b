//! Pre-initialized snapshots: a module exporting `_initialize` (the Go
//! runtime's start, Rust's static constructors) is instantiated once at load,
//! under the load's limits, and its `_initialize` run; `wasmtime-wizer` then
//! writes its linear memory and mutable globals into a new module (data
//! segments, global initializers) that no longer exports `_initialize`. That
//! snapshot is what gets validated, compiled and served: every evaluation
//! still gets a fresh store and instance, but starts from the initialized
//! state instead of running `_initialize` again.
//!
//! The host state the guest can observe resumes where `_initialize` left it
//! ([`Resume`]: virtual time slept, position in the random sequence), so an
//! evaluation of the snapshot reads the same clocks and random bytes as a
//! fresh instance that ran `_initialize` itself. The resume point travels with
//! the snapshot, in its custom section [`SECTION`].

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use wasmtime::{Instance, Store, Val};
use wasmtime_wizer::{InstanceState, ModuleContext, SnapshotVal, ValType, Wizer};

use crate::config::HostConfig;
use crate::error::PolicyError;
use crate::invoke;
use crate::module::CompiledPolicy;
use crate::sandbox::{Resume, StoreState};
use crate::validate::LoadBudget;

/// The snapshot format: changes whenever what a snapshot holds or how it is
/// taken changes (the wasmtime-wizer version, which is wasmtime's and
/// wasmtime-wasi's, checked by a test against `Cargo.lock`; the host
/// functions `_initialize` may call), so snapshots cached on disk by an older
/// host are not reused.
pub(crate) const FORMAT: &str = "snap3-wizer48.0.8";

/// The limits `_initialize` runs under when a snapshot is taken with
/// `config` (its deadline, the load budget, the epoch tick, fuel, memory and
/// stdio caps), as text. A snapshot is reused only under the same limits: one
/// taken under looser limits says nothing about whether `_initialize` would
/// end under the current ones.
pub(crate) fn limits(config: &HostConfig) -> String {
    format!(
        "deadline={:?},loadBudget={:?},epochTick={:?},fuel={},memoryCap={},stdioCap={}",
        config.deadline,
        config.load_budget,
        config.epoch_tick,
        config.fuel,
        config.memory_cap,
        config.stdio_cap
    )
}

/// Name of the custom section carrying a snapshot's [`Resume`] point.
pub(crate) const SECTION: &str = "tmc-snapshot";

/// What [`SECTION`] holds (JSON).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Stamp {
    format: String,
    /// SHA-256 of the original module.
    digest: String,
    /// The [`limits`] `_initialize` ran under.
    limits: String,
    resume: Resume,
}

/// A pre-initialized module: its bytes (with [`SECTION`]) and resume point.
pub(crate) struct Snapshot {
    pub bytes: Vec<u8>,
    pub resume: Resume,
}

impl Snapshot {
    /// Reads back a snapshot taken by [`Instrumented::take`] of the module
    /// `digest` under `limits` (see [`limits`]); `None` if `bytes` are not
    /// one (another format, another module, other limits).
    pub fn parse(digest: &str, limits: &str, bytes: Vec<u8>) -> Option<Self> {
        let payload = custom_section(&bytes, SECTION)?;
        let stamp: Stamp = serde_json::from_slice(payload).ok()?;
        let ours = stamp.format == FORMAT && stamp.digest == digest && stamp.limits == limits;
        ours.then_some(Self {
            resume: stamp.resume,
            bytes,
        })
    }
}

/// True when `bytes` are a wasm module exporting a function `_initialize`
/// (its signature is checked with the other exports).
pub(crate) fn wants(bytes: &[u8]) -> bool {
    sections(bytes)
        .filter(|(id, _)| *id == EXPORT_SECTION)
        .any(|(_, body)| exports_function(body, "_initialize").unwrap_or(false))
}

/// A module instrumented by wasmtime-wizer (every mutable global and memory
/// exported), to be compiled, instantiated and initialized once.
pub(crate) struct Instrumented<'a> {
    wizer: Wizer,
    cx: ModuleContext<'a>,
    /// The instrumented module.
    pub wasm: Vec<u8>,
}

/// Instruments `bytes` (policy `name`) for a snapshot; `None` when
/// wasmtime-wizer cannot snapshot the module (e.g. it mutates tables), which
/// is then served as before, `_initialize` in every evaluation.
pub(crate) fn instrument<'a>(name: &str, bytes: &'a [u8]) -> Option<Instrumented<'a>> {
    let mut wizer = Wizer::new();
    wizer.init_func("_initialize");
    match wizer.instrument(bytes) {
        Ok((cx, wasm)) => Some(Instrumented { wizer, cx, wasm }),
        Err(e) => {
            tracing::info!(
                policy = name,
                "the module cannot be pre-initialized ({e:#}); it runs _initialize in every evaluation"
            );
            None
        }
    }
}

impl Instrumented<'_> {
    /// Takes the snapshot of the module `digest`, loaded as `name`, whose
    /// instrumented code is `policy`: instantiated in a store with the
    /// evaluation limits, `_initialize` run within the evaluation deadline
    /// and what is left of `budget`, then memory and globals captured.
    pub fn take(
        self,
        budget: &LoadBudget<'_>,
        name: &str,
        digest: &str,
        policy: &CompiledPolicy,
    ) -> Result<Snapshot, PolicyError> {
        let Self { wizer, cx, .. } = self;
        let config = budget.config();
        let limits = limits(config);
        let bytes = budget.run(name, |deadline| {
            invoke::initialized(config, deadline, name, policy, |store, instance| {
                let resume = store.data().resume();
                let mut state = Captured {
                    store,
                    instance: *instance,
                    missing: None,
                };
                let snapshot = ready(wizer.snapshot(&cx, &mut state))?;
                if let Some(missing) = state.missing {
                    return Err(wasmtime::Error::msg(format!(
                        "wasmtime-wizer asked for {missing}, which its instrumentation should have exported"
                    )));
                }
                let snapshot = merged_data_segments(&snapshot).unwrap_or(snapshot);
                Ok(stamped(snapshot, digest, &limits, resume))
            })
        })?;
        let snapshot =
            Snapshot::parse(digest, &limits, bytes).ok_or_else(|| PolicyError::Internal {
                policy: name.into(),
                message: "a snapshot just taken does not read back".into(),
            })?;
        tracing::debug!(policy = name, bytes = snapshot.bytes.len(), resume = ?snapshot.resume, "module pre-initialized");
        Ok(snapshot)
    }
}

/// The initialized instance, as wasmtime-wizer reads it.
struct Captured<'a> {
    store: &'a mut Store<StoreState>,
    instance: Instance,
    /// The first export wizer asked for that the instance lacks.
    missing: Option<String>,
}

impl InstanceState for Captured<'_> {
    async fn global_get(&mut self, name: &str, _type_hint: ValType) -> SnapshotVal {
        let value = self
            .instance
            .get_global(&mut *self.store, name)
            .map(|global| global.get(&mut *self.store));
        match value {
            Some(Val::I32(x)) => SnapshotVal::I32(x),
            Some(Val::I64(x)) => SnapshotVal::I64(x),
            Some(Val::F32(x)) => SnapshotVal::F32(x),
            Some(Val::F64(x)) => SnapshotVal::F64(x),
            Some(Val::V128(x)) => SnapshotVal::V128(x.as_u128()),
            _ => {
                self.missing
                    .get_or_insert_with(|| format!("a numeric global {name:?}"));
                SnapshotVal::I32(0)
            }
        }
    }

    async fn memory_contents(&mut self, name: &str, contents: impl FnOnce(&[u8]) + Send) {
        match self.instance.get_memory(&mut *self.store, name) {
            Some(memory) => contents(memory.data(&*self.store)),
            None => {
                self.missing
                    .get_or_insert_with(|| format!("a memory {name:?}"));
                contents(&[]);
            }
        }
    }
}

/// Runs a future that never waits (wizer's snapshot over [`Captured`],
/// whose methods complete at once) to its end.
fn ready<T>(future: impl Future<Output = T>) -> T {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(value) = future.as_mut().poll(&mut cx) {
            return value;
        }
    }
}

/// `snapshot` with [`SECTION`] appended.
fn stamped(mut snapshot: Vec<u8>, digest: &str, limits: &str, resume: Resume) -> Vec<u8> {
    let stamp = Stamp {
        format: FORMAT.into(),
        digest: digest.into(),
        limits: limits.into(),
        resume,
    };
    let payload = serde_json::to_vec(&stamp).unwrap_or_default();
    let mut body = Vec::new();
    leb128(&mut body, SECTION.len() as u64);
    body.extend_from_slice(SECTION.as_bytes());
    body.extend_from_slice(&payload);
    snapshot.push(CUSTOM_SECTION);
    leb128(&mut snapshot, body.len() as u64);
    snapshot.extend_from_slice(&body);
    snapshot
}

const CUSTOM_SECTION: u8 = 0;
const EXPORT_SECTION: u8 = 7;
const DATA_SECTION: u8 = 11;
const DATA_COUNT_SECTION: u8 = 12;

/// Segments of a snapshot closer than this are merged, the gap zero-filled.
const MERGE_GAP: u64 = 1024;

/// `snapshot` with its active data segments merged where they are at most
/// [`MERGE_GAP`] bytes apart and its passive ones dropped; `None` leaves it
/// as it is (a data count section, which code referring to segments by index
/// needs, or an active segment that is not `i32.const` on memory 0).
///
/// wasmtime-wizer writes one active segment per run of non-zero bytes (runs
/// at most 4 bytes apart joined), up to 10,000, after the module's own
/// segments emptied and made passive: the Go twin's snapshot has 49,672
/// segments, and wasmtime's instantiation walks every one of them (a third
/// of a Go evaluation's time on the policy_engine bench,
/// docs/benchmarks.md). Merged at 1 KiB and without the passive ones they
/// are 119, and the data section grows from 1.77 to 1.95 MB (the zeros of the
/// gaps); the memory every instance starts from is the same bytes.
fn merged_data_segments(snapshot: &[u8]) -> Option<Vec<u8>> {
    if sections(snapshot).any(|(id, _)| id == DATA_COUNT_SECTION) {
        return None;
    }
    let (_, data) = sections(snapshot).find(|(id, _)| *id == DATA_SECTION)?;
    let (count, mut rest) = read_leb128(data)?;
    let mut merged: Vec<(u64, Vec<u8>)> = Vec::new();
    for _ in 0..count {
        // Passive (flags 1): without a data count section no instruction
        // can name it (`memory.init` and `data.drop` need that section to
        // validate), so it is dropped. wasmtime-wizer keeps the module's own
        // segments this way, emptied: 39,672 of them in the Go twin, each
        // one more entry for every instantiation to walk.
        if let Some((&1, after)) = rest.split_first() {
            let (len, after) = read_leb128(after)?;
            rest = after.get(usize::try_from(len).ok()?..)?;
            continue;
        }
        // Active on memory 0: flags 0, `i32.const offset`, `end`.
        let (&[0, 0x41], after) = rest.split_first_chunk::<2>()? else {
            return None;
        };
        let (offset, after) = read_sleb128(after)?;
        let (&end, after) = after.split_first()?;
        let (len, after) = read_leb128(after)?;
        let len = usize::try_from(len).ok()?;
        let offset = u64::try_from(offset).ok()?;
        if end != 0x0b || after.len() < len {
            return None;
        }
        let (bytes, after) = after.split_at(len);
        rest = after;
        // Segments in ascending order that do not overlap (as wasmtime-wizer
        // writes them) only: a gap filled with zeros must not cover bytes
        // an earlier segment wrote.
        let end_so_far = merged
            .last()
            .map_or(0, |(start, joined)| *start + joined.len() as u64);
        if offset < end_so_far {
            return None;
        }
        match merged.last_mut() {
            Some((start, joined)) if offset - (*start + joined.len() as u64) <= MERGE_GAP => {
                joined.resize((offset - *start) as usize, 0);
                joined.extend_from_slice(bytes);
            }
            _ => merged.push((offset, bytes.to_vec())),
        }
    }
    if !rest.is_empty() {
        return None;
    }
    let mut body = Vec::new();
    leb128(&mut body, merged.len() as u64);
    for (offset, bytes) in &merged {
        body.extend_from_slice(&[0, 0x41]);
        sleb128(&mut body, i64::try_from(*offset).ok()?);
        body.push(0x0b);
        leb128(&mut body, bytes.len() as u64);
        body.extend_from_slice(bytes);
    }
    let mut out = b"\0asm\x01\0\0\0".to_vec();
    let mut read = out.len();
    for (id, section) in sections(snapshot) {
        let mut header = vec![id];
        leb128(&mut header, section.len() as u64);
        read += header.len() + section.len();
        let section = if id == DATA_SECTION {
            &body[..]
        } else {
            section
        };
        out.push(id);
        leb128(&mut out, section.len() as u64);
        out.extend_from_slice(section);
    }
    // Every section was read (none malformed, nothing left behind).
    (read == snapshot.len()).then_some(out)
}

/// The sections of a wasm module: id and body; stops at the first malformed
/// one (the compiler reports what is wrong with such bytes).
fn sections(bytes: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    let mut rest = bytes
        .strip_prefix(b"\0asm\x01\0\0\0".as_slice())
        .unwrap_or_default();
    std::iter::from_fn(move || {
        let (&id, after_id) = rest.split_first()?;
        let (len, after_len) = read_leb128(after_id)?;
        let len = usize::try_from(len).ok()?;
        let body = after_len.get(..len)?;
        rest = &after_len[len..];
        Some((id, body))
    })
}

/// The payload of the custom section `name`, if the module has one.
fn custom_section<'a>(bytes: &'a [u8], name: &str) -> Option<&'a [u8]> {
    sections(bytes)
        .filter(|(id, _)| *id == CUSTOM_SECTION)
        .find_map(|(_, body)| {
            let (len, rest) = read_leb128(body)?;
            let len = usize::try_from(len).ok()?;
            (rest.get(..len)? == name.as_bytes()).then(|| &rest[len..])
        })
}

/// Whether an export section body exports a function named `name`.
fn exports_function(mut body: &[u8], name: &str) -> Option<bool> {
    let (count, rest) = read_leb128(body)?;
    body = rest;
    for _ in 0..count {
        let (len, rest) = read_leb128(body)?;
        let len = usize::try_from(len).ok()?;
        let export = rest.get(..len)?;
        let (&kind, rest) = rest.get(len..)?.split_first()?;
        let (_index, rest) = read_leb128(rest)?;
        if export == name.as_bytes() && kind == 0 {
            return Some(true);
        }
        body = rest;
    }
    Some(false)
}

fn read_leb128(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0u64;
    for (i, &byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, &bytes[i + 1..]));
        }
    }
    None
}

fn read_sleb128(bytes: &[u8]) -> Option<(i64, &[u8])> {
    let mut value = 0i64;
    for (i, &byte) in bytes.iter().enumerate().take(10) {
        value |= i64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            if i < 9 && byte & 0x40 != 0 {
                value |= -1i64 << (7 * (i + 1));
            }
            return Some((value, &bytes[i + 1..]));
        }
    }
    None
}

fn sleb128(out: &mut Vec<u8>, mut value: i64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if (value == 0 && byte & 0x40 == 0) || (value == -1 && byte & 0x40 != 0) {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn leb128(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use wasmtime::Module;

    use super::*;
    use crate::engine::{Engines, TierEngine};
    use crate::invoke::{self, Export};
    use crate::module::{self, Tier};

    fn built(name: &str) -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/policies")
            .join(format!("{name}.wasm"));
        std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "cannot read {}: {e}; build the policies first: hack/build-policies.sh",
                path.display()
            )
        })
    }

    fn prepared(
        tier: &TierEngine,
        wasm: &[u8],
        digest: &str,
        snapshot: Option<Resume>,
    ) -> Arc<CompiledPolicy> {
        let module = Module::new(&tier.engine, wasm).expect("compiles");
        module::prepare(
            "p",
            module,
            digest.into(),
            Tier::Optimized,
            &tier.linker,
            snapshot,
        )
        .expect("exports check")
    }

    /// The module as written (`_initialize` in every call) and its snapshot.
    fn both(config: &HostConfig, bytes: &[u8]) -> (Arc<CompiledPolicy>, Arc<CompiledPolicy>) {
        let engines = Engines::new(config).expect("engines");
        // Winch: the Go module compiles three times here, Cranelift would
        // take a minute in a debug build.
        let tier = engines.baseline.as_ref().unwrap_or(&engines.optimized);
        let digest = module::digest(bytes);
        let snapshot = taken(config, tier, bytes);
        let plain = prepared(tier, bytes, &digest, None);
        let served = prepared(tier, &snapshot.bytes, &digest, Some(snapshot.resume));
        assert!(plain.exports.initialize.is_some());
        assert!(
            served.exports.initialize.is_none(),
            "the snapshot is initialized"
        );
        assert_eq!(plain.function_exports(), served.function_exports());
        (plain, served)
    }

    /// The snapshot of `bytes`, compiled by `tier`.
    fn taken(config: &HostConfig, tier: &TierEngine, bytes: &[u8]) -> Snapshot {
        let digest = module::digest(bytes);
        assert!(wants(bytes));
        let instrumented = instrument("p", bytes).expect("wizer takes it");
        let init = prepared(tier, &instrumented.wasm, &digest, None);
        instrumented
            .take(&LoadBudget::start(config), "p", &digest, &init)
            .expect("snapshot")
    }

    /// Same output, byte for byte, from the snapshot and from a fresh start,
    /// for every input; returns the fuel of the last call of each and the
    /// snapshot's resume point.
    fn same_answers(name: &str, inputs: &[(Export, &[u8])]) -> (u64, u64, Resume) {
        // Answers and fuel are compared, not time: a Go module's vectors on
        // Winch code can take over the default 100 ms on a loaded machine.
        let config = HostConfig {
            deadline: std::time::Duration::from_secs(10),
            ..HostConfig::default()
        };
        let (plain, served) = both(&config, &built(name));
        let mut fuel = (0, 0);
        for (export, input) in inputs {
            let a = invoke::call(&config, "p", &plain, *export, input).expect("fresh start");
            let b = invoke::call(&config, "p", &served, *export, input).expect("snapshot");
            assert_eq!(
                String::from_utf8_lossy(&a.bytes),
                String::from_utf8_lossy(&b.bytes),
                "{name} {export:?}"
            );
            let again = invoke::call(&config, "p", &served, *export, input).expect("again");
            assert_eq!(
                b.bytes, again.bytes,
                "every call starts from the same state"
            );
            fuel = (a.fuel_used, b.fuel_used);
        }
        (fuel.0, fuel.1, served.snapshot.expect("a snapshot"))
    }

    #[test]
    fn the_go_twin_answers_the_same_from_its_snapshot_for_less_fuel() {
        let request = br#"{"workload":{"apiVersion":"apps/v1","kind":"Deployment","name":"w","annotations":{"tmc.kcp.io/regions":"us-west-1"},"replicas":3},"placement":{"name":"p"},"settings":{"mode":"preferred","maxTargets":2},"targets":[{"name":"a","labels":{},"location":{"region":"us-west-1"},"ready":true,"schedulable":true},{"name":"b","labels":{},"location":{"region":"us-east-1"},"ready":true,"schedulable":true}]}"#;
        let (fresh, snapshot, _) = same_answers(
            "location-affinity-go",
            &[
                (Export::TestVectors, b""),
                (
                    Export::ValidateSettings,
                    br#"{"settings":{"mode":"bogus"}}"#,
                ),
                (Export::Place, request),
            ],
        );
        assert!(
            snapshot < fresh / 2,
            "the Go runtime no longer starts per call: {snapshot} vs {fresh} fuel"
        );
    }

    #[test]
    fn the_go_twin_snapshot_has_few_data_segments() {
        let config = HostConfig {
            deadline: std::time::Duration::from_secs(10),
            ..HostConfig::default()
        };
        let engines = Engines::new(&config).expect("engines");
        let tier = engines.baseline.as_ref().unwrap_or(&engines.optimized);
        let snapshot = taken(&config, tier, &built("location-affinity-go"));
        let (_, data) = sections(&snapshot.bytes)
            .find(|(id, _)| *id == DATA_SECTION)
            .expect("data section");
        let count = read_leb128(data).map_or(u64::MAX, |(n, _)| n);
        // wasmtime-wizer writes about 50,000 (10,000 active, the module's
        // own emptied as passive): every instantiation walks them all.
        assert!(count < 1_000, "{count} data segments left in the snapshot");
    }

    #[test]
    fn clocks_and_random_bytes_resume_where_initialize_left_them() {
        // sleepy-go-init sleeps 10 s of virtual time in `_initialize` and
        // reports, with the time it slept since, what its clocks read.
        let (_, _, resume) = same_answers(
            "sleepy-go-init",
            &[(Export::Place, br#"{"settings":{"sleepMs":5},"targets":[]}"#)],
        );
        assert!(resume.slept_ns >= 10_000_000_000, "{resume:?}");
        assert!(
            resume.random_position > 0,
            "the Go runtime seeds itself: {resume:?}"
        );
        assert!(
            !wants(&built("location-affinity")),
            "Rust cdylib policies export no _initialize: served as written"
        );
    }

    fn wat(text: &str) -> Vec<u8> {
        wat::parse_str(text).expect("valid WAT")
    }

    #[test]
    fn close_data_segments_are_merged_into_the_same_memory() {
        let bytes = wat(r#"(module (memory (export "memory") 1)
            (data (i32.const 16) "ab") (data "passive") (data (i32.const 30) "cd")
            (data (i32.const 5000) "ef"))"#);
        let merged = merged_data_segments(&bytes).expect("merged");
        let (_, data) = sections(&merged)
            .find(|(id, _)| *id == DATA_SECTION)
            .expect("data section");
        assert_eq!(
            read_leb128(data).map(|(n, _)| n),
            Some(2),
            "16..32 and 5000..5002, the passive segment dropped"
        );
        let memory = |bytes: &[u8]| {
            let engine = wasmtime::Engine::default();
            let module = Module::new(&engine, bytes).expect("valid");
            let mut store = wasmtime::Store::new(&engine, ());
            let instance = wasmtime::Instance::new(&mut store, &module, &[]).expect("instance");
            let memory = instance.get_memory(&mut store, "memory").expect("memory");
            memory.data(&store).to_vec()
        };
        assert_eq!(memory(&merged), memory(&bytes));
        let with_count = wat(
            r#"(module (memory 1) (data (i32.const 0) "a") (data (i32.const 2) "b")
            (func (data.drop 0)))"#,
        );
        assert!(
            merged_data_segments(&with_count).is_none(),
            "indices in code: left as it is"
        );
        let unordered = wat(
            r#"(module (memory 1) (data (i32.const 100) "late") (data (i32.const 40) "early"))"#,
        );
        assert!(
            merged_data_segments(&unordered).is_none(),
            "segments out of order: left as they are"
        );
    }

    #[test]
    fn wants_only_modules_exporting_an_initialize_function() {
        assert!(wants(&wat(
            r#"(module (func (export "other")) (func (export "_initialize")))"#
        )));
        assert!(!wants(&wat(r#"(module (func (export "_start")))"#)));
        assert!(!wants(&wat(
            r#"(module (global (export "_initialize") i32 (i32.const 0)))"#
        )));
        assert!(!wants(b"not wasm"));
    }

    #[test]
    fn a_stamp_reads_back_only_for_its_module_and_format() {
        let resume = Resume {
            slept_ns: 7,
            random_position: 300,
        };
        let config = HostConfig::default();
        let ours = limits(&config);
        let bytes = stamped(wat("(module)"), "abc", &ours, resume);
        wasmtime::Module::validate(&wasmtime::Engine::default(), &bytes).expect("still valid");
        let snapshot = Snapshot::parse("abc", &ours, bytes.clone()).expect("reads back");
        assert_eq!(snapshot.resume, resume);
        assert!(Snapshot::parse("other", &ours, bytes.clone()).is_none());
        assert!(Snapshot::parse("abc", &ours, wat("(module)")).is_none());
        let lower = limits(&HostConfig {
            fuel: config.fuel - 1,
            ..config
        });
        assert!(
            Snapshot::parse("abc", &lower, bytes).is_none(),
            "taken under other limits"
        );
    }

    #[test]
    fn every_limit_of_initialize_is_in_the_limits() {
        let base = HostConfig::default();
        let changed = [
            HostConfig {
                deadline: base.deadline / 2,
                ..base.clone()
            },
            HostConfig {
                load_budget: base.load_budget / 2,
                ..base.clone()
            },
            HostConfig {
                epoch_tick: base.epoch_tick * 2,
                ..base.clone()
            },
            HostConfig {
                fuel: 0,
                ..base.clone()
            },
            HostConfig {
                memory_cap: base.memory_cap / 2,
                ..base.clone()
            },
            HostConfig {
                stdio_cap: base.stdio_cap / 2,
                ..base.clone()
            },
        ];
        for config in changed {
            assert_ne!(limits(&config), limits(&base), "{config:?}");
        }
        // What `_initialize` never sees does not force a new snapshot.
        let unrelated = HostConfig {
            input_cap: 1,
            output_cap: 1,
            max_concurrent: 1,
            tiered: !base.tiered,
            ..base.clone()
        };
        assert_eq!(limits(&unrelated), limits(&base));
    }

    /// [`FORMAT`] names the wasmtime-wizer version, and wasmtime and
    /// wasmtime-wasi (which run `_initialize`) are that version too: a
    /// dependency update that forgets [`FORMAT`] fails here.
    #[test]
    fn the_format_names_the_locked_wasmtime_version() {
        let lock =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.lock"))
                .expect("Cargo.lock");
        let version = |name: &str| {
            let head = format!("[[package]]\nname = \"{name}\"\nversion = \"");
            let at = lock
                .find(&head)
                .unwrap_or_else(|| panic!("{name} in Cargo.lock"))
                + head.len();
            lock[at..].split('"').next().expect("version").to_string()
        };
        let wizer = version("wasmtime-wizer");
        assert!(
            FORMAT.ends_with(&format!("-wizer{wizer}")),
            "{FORMAT} vs {wizer}"
        );
        assert_eq!(version("wasmtime"), wizer);
        assert_eq!(version("wasmtime-wasi"), wizer);
    }
}
