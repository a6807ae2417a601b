//! Guests that sleep or wait for input never hold a thread in real time.
//!
//! `poll_oneoff` (Rust `std::thread::sleep`, Go `time.Sleep`, hand-written
//! WAT) advances the evaluation's virtual clock and returns at once; stdin is
//! at end of file. A guest that sleeps forever meets the deadline like any
//! loop. Each blocking call is tried in `tmc_place`, in `tmc_transform` and in
//! `_initialize`: every evaluation and every reload ends within the deadline
//! plus a margin, a good policy keeps answering meanwhile, and hot reload
//! keeps working afterwards.
//!
//! The Rust and Go fixtures (`tests/fixtures/sleepy-rust`, `sleepy-go`) are
//! built by `hack/build-policies.sh`; the WAT fixtures are compiled here.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use tmc_policy_host::{HostConfig, PolicyError, PolicyHost, PolicyStatus};
use tmc_policy_sdk::{PlacementRequest, TransformRequest, Workload};

/// The default evaluation deadline.
const DEADLINE: Duration = Duration::from_millis(100);

/// Head-room over the deadline for thread hand-offs on a busy machine
/// (2 cores shared with compilers). A sleep served in real time (10 s) is
/// 20x over deadline plus margin.
const MARGIN: Duration = Duration::from_millis(400);

/// Where a module blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Site {
    Place,
    Transform,
    Initialize,
}

const SITES: [Site; 3] = [Site::Place, Site::Transform, Site::Initialize];

/// A WAT fixture whose `$block` runs in `tmc_place` and `tmc_transform`,
/// and also as `_initialize` for [`Site::Initialize`].
fn wat_module(name: &str, site: Site) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{name}.wat"));
    let mut text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()));
    if site == Site::Initialize {
        let end = text.rfind(')').expect("module ends with ')'");
        text.insert_str(end, "  (export \"_initialize\" (func $block))\n");
    }
    wat::parse_str(&text).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

fn host_for_tests() -> PolicyHost {
    let host = cached_host();
    assert_eq!(host.config().deadline, DEADLINE, "the tests assume it");
    host
}

fn place_request(settings: Value) -> PlacementRequest {
    PlacementRequest {
        settings,
        ..request(None)
    }
}

fn transform_request(settings: Value) -> TransformRequest {
    TransformRequest {
        workload: Workload::default(),
        target: target("west", "us-west-1"),
        replicas: None,
        settings,
    }
}

/// Calls `p` at `site` (`_initialize`: through `tmc_place`, which
/// instantiates); returns the answer text (reason, or the transform's
/// `sleepy.test/slept` annotation, empty for WAT modules) and checks the time.
async fn call(host: &PolicyHost, site: Site, settings: Value) -> Result<String, PolicyError> {
    let started = Instant::now();
    let answer = match site {
        Site::Place | Site::Initialize => host
            .place("p", &place_request(settings))
            .await
            .map(|e| e.value.reason),
        Site::Transform => host
            .transform("p", &transform_request(settings))
            .await
            .map(|e| {
                e.value
                    .annotations
                    .set
                    .get("sleepy.test/slept")
                    .cloned()
                    .unwrap_or_default()
            }),
    };
    let took = started.elapsed();
    assert!(
        took < DEADLINE + MARGIN,
        "{site:?} took {took:?}, more than the deadline {DEADLINE:?} + {MARGIN:?}: {answer:?}"
    );
    answer
}

/// While `p` is evaluated three times at `site`, `good` answers (a blocked
/// guest holds no other evaluation up). Returns `p`'s answers.
async fn call_beside_good(
    host: &PolicyHost,
    site: Site,
    settings: &Value,
) -> Vec<Result<String, PolicyError>> {
    let (a, b, c, good) = tokio::join!(
        call(host, site, settings.clone()),
        call(host, site, settings.clone()),
        call(host, site, settings.clone()),
        async {
            let started = Instant::now();
            let eval = host.place("good", &request(None)).await;
            (eval, started.elapsed())
        }
    );
    let (eval, took) = good;
    assert_eq!(eval.expect("good answers").value.reason, "v1");
    assert!(took < DEADLINE + MARGIN, "good took {took:?}");
    vec![a, b, c]
}

/// Loads `good` and `p` (= `module`); returns the load report's refusals of `p`.
async fn load(host: &PolicyHost, dir: &std::path::Path, module: &[u8]) -> Option<String> {
    write_policy(dir, "good", &fixture("good-v1"));
    write_policy(dir, "p", module);
    let report = host.load_dir(dir).await.expect("load");
    report
        .refused
        .into_iter()
        .find(|(name, _)| name == "p")
        .map(|(_, cause)| cause)
}

/// Reloads `p` as `module` after another version, so the reload runs only
/// validation (the compiled code is cached): it must end within the deadline
/// plus the margin, whatever `module` does in `_initialize`. Returns the
/// refusal of `p`, if any.
async fn timed_reload(host: &PolicyHost, dir: &std::path::Path, module: &[u8]) -> Option<String> {
    write_policy(dir, "p", &fixture("good-v2"));
    let report = host.load_dir(dir).await.expect("reload v2");
    assert_eq!(report.loaded, ["p"], "{report:?}");
    write_policy(dir, "p", module);
    let started = Instant::now();
    let report = host.load_dir(dir).await.expect("reload");
    let took = started.elapsed();
    assert!(
        took < DEADLINE + MARGIN,
        "reloading took {took:?}, more than the deadline {DEADLINE:?} + {MARGIN:?}: {report:?}"
    );
    report
        .refused
        .into_iter()
        .find(|(name, _)| name == "p")
        .map(|(_, cause)| cause)
}

/// Hot reload still works: `p` becomes good-v1 again and answers.
async fn reload_works_after(host: &PolicyHost, dir: &std::path::Path) {
    write_policy(dir, "p", &fixture("good-v1"));
    let report = host.load_dir(dir).await.expect("reload good");
    assert_eq!(report.loaded, ["p"], "{report:?}");
    let eval = host.place("p", &request(None)).await.expect("good p");
    assert_eq!(eval.value.reason, "v1");
    assert_eq!(
        host.generation().get("p").expect("listed").status,
        PolicyStatus::Active
    );
}

/// A module that blocks at `site` and then answers: it answers within the
/// deadline with `expect(site)` (the virtual time it saw), beside a good
/// policy, reloads within the deadline, and hot reload works afterwards.
async fn answers_at_once(
    module: impl Fn(Site) -> Vec<u8>,
    settings: impl Fn(Site) -> Value,
    expect: impl Fn(Site) -> &'static str,
) {
    for site in SITES {
        let dir = tempfile::tempdir().expect("tempdir");
        let host = host_for_tests();
        let bytes = module(site);
        assert_eq!(load(&host, dir.path(), &bytes).await, None, "{site:?}");
        for answer in call_beside_good(&host, site, &settings(site)).await {
            assert_eq!(answer.expect("answers"), expect(site), "{site:?}");
        }
        assert_eq!(
            timed_reload(&host, dir.path(), &bytes).await,
            None,
            "{site:?}"
        );
        reload_works_after(&host, dir.path()).await;
    }
}

/// A module that blocks forever at `site`: each evaluation ends with a
/// deadline (or fuel) error within the deadline, beside a good policy; with
/// `_initialize` blocking, loading it is refused within the deadline and the
/// last good version keeps serving; hot reload works afterwards.
async fn stopped_at_the_deadline(
    module: impl Fn(Site) -> Vec<u8>,
    settings: impl Fn(Site) -> Value,
) {
    for site in SITES {
        let dir = tempfile::tempdir().expect("tempdir");
        let host = host_for_tests();
        let bytes = module(site);
        if site == Site::Initialize {
            let cause = load(&host, dir.path(), &bytes)
                .await
                .expect("refused: _initialize never ends");
            assert!(cause.contains("deadline"), "{cause}");
            let cause = timed_reload(&host, dir.path(), &bytes)
                .await
                .expect("refused again");
            assert!(cause.contains("deadline"), "{cause}");
            let eval = host.place("p", &request(None)).await.expect("last good");
            assert_eq!(eval.value.reason, "v2");
        } else {
            assert_eq!(load(&host, dir.path(), &bytes).await, None, "{site:?}");
            for answer in call_beside_good(&host, site, &settings(site)).await {
                let err = answer.expect_err("never answers");
                assert!(
                    matches!(err, PolicyError::Deadline { .. } | PolicyError::Fuel { .. }),
                    "{site:?}: {err}"
                );
            }
        }
        reload_works_after(&host, dir.path()).await;
    }
}

#[tokio::test]
async fn wat_poll_oneoff_sleep_advances_virtual_time_at_once() {
    // The module itself traps unless its clock moved by the 10 s it slept.
    answers_at_once(
        |site| wat_module("poll-sleep", site),
        |_| Value::Null,
        |site| {
            if site == Site::Place || site == Site::Initialize {
                "v1"
            } else {
                ""
            }
        },
    )
    .await;
}

#[tokio::test]
async fn wat_stdin_is_at_end_of_file_at_once() {
    answers_at_once(
        |site| wat_module("stdin-read", site),
        |_| Value::Null,
        |site| if site == Site::Transform { "" } else { "v1" },
    )
    .await;
}

#[tokio::test]
async fn wat_sleeping_forever_meets_the_deadline() {
    stopped_at_the_deadline(
        |site| wat_module("poll-sleep-forever", site),
        |_| Value::Null,
    )
    .await;
}

/// `sleepy-rust` or `sleepy-go`, with the `-init` variant for `_initialize`.
fn sleepy(lang: &str) -> impl Fn(Site) -> Vec<u8> {
    move |site| match site {
        Site::Initialize => built_module(&format!("sleepy-{lang}-init")),
        _ => built_module(&format!("sleepy-{lang}")),
    }
}

/// Sleep 10 s in place/transform; nothing more when the module sleeps in init.
fn sleep_10s(site: Site) -> Value {
    match site {
        Site::Initialize => json!({}),
        _ => json!({"sleepMs": 10_000}),
    }
}

fn slept_10s(site: Site) -> &'static str {
    match site {
        Site::Initialize => "slept 0 ms, init 10000 ms",
        _ => "slept 10000 ms, init 0 ms",
    }
}

#[tokio::test]
async fn rust_thread_sleep_advances_virtual_time_at_once() {
    answers_at_once(sleepy("rust"), sleep_10s, slept_10s).await;
}

#[tokio::test]
async fn go_time_sleep_advances_virtual_time_at_once() {
    answers_at_once(sleepy("go"), sleep_10s, slept_10s).await;
}

#[tokio::test]
async fn rust_sleeping_forever_meets_the_deadline() {
    // `_initialize` of the -init variant ends (it sleeps 10 s of virtual
    // time once), so that site is covered by the WAT module only.
    let module = sleepy("rust");
    stopped_at_the_deadline(
        |site| match site {
            Site::Initialize => wat_module("poll-sleep-forever", site),
            _ => module(site),
        },
        |_| json!({"sleepMs": 1_000, "forever": true}),
    )
    .await;
}

#[tokio::test]
async fn go_sleeping_forever_meets_the_deadline() {
    let module = sleepy("go");
    stopped_at_the_deadline(
        |site| match site {
            Site::Initialize => wat_module("poll-sleep-forever", site),
            _ => module(site),
        },
        |_| json!({"sleepMs": 1_000, "forever": true}),
    )
    .await;
}

#[tokio::test]
async fn fuel_off_still_stops_a_guest_sleeping_forever() {
    let host = host_with(HostConfig {
        fuel: 0,
        ..HostConfig::default()
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let bytes = wat_module("poll-sleep-forever", Site::Place);
    assert_eq!(load(&host, dir.path(), &bytes).await, None);
    let err = call(&host, Site::Place, Value::Null)
        .await
        .expect_err("never answers");
    assert!(matches!(err, PolicyError::Deadline { .. }), "{err}");
}

#[tokio::test]
async fn a_load_budget_bounds_all_load_steps_together() {
    // Each call of the load ends within the deadline, but a module whose
    // `_initialize` never ends is refused once the (smaller) budget is spent.
    let host = host_with(HostConfig {
        deadline: Duration::from_secs(5),
        load_budget: Duration::from_millis(150),
        fuel: 0,
        ..HostConfig::default()
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();
    let bytes = wat_module("poll-sleep-forever", Site::Initialize);
    let cause = load(&host, dir.path(), &bytes).await.expect("refused");
    assert!(
        cause.contains("loading took longer than its budget of 150ms"),
        "{cause}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}
