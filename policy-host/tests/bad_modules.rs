//! Every kind of misbehaving module, through the real host: each is refused or
//! fails with an error naming the policy, and good policies keep serving.

mod common;

use std::time::Duration;

use common::*;
use tmc_policy_host::{HostConfig, PolicyError, PolicyHost, PolicyStatus};
use tmc_policy_sdk::rules::RuleViolation;
use tmc_policy_sdk::{TransformRequest, Workload};

/// Loads `good-v1` as `p`, then replaces `p` with `bad` and reloads: the new
/// bytes must be refused with an error containing `cause`, and `p` keeps
/// answering with v1. The same bytes given to `load_module` are refused with
/// the same error.
async fn refused_on_load(bad: &[u8], cause: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = host();
    write_policy(dir.path(), "p", &fixture("good-v1"));
    let first = host.load_dir(dir.path()).await.expect("load");
    assert_eq!(first.loaded, ["p"]);

    write_policy(dir.path(), "p", bad);
    let report = host.load_dir(dir.path()).await.expect("reload");
    assert_eq!(report.refused.len(), 1, "{report:?}");
    let (name, message) = &report.refused[0];
    assert_eq!(name, "p");
    assert!(
        message.contains("\"p\""),
        "error names the policy: {message}"
    );
    assert!(message.contains(cause), "error says {cause:?}: {message}");

    let generation = host.generation();
    let entry = generation.get("p").expect("entry kept");
    assert_eq!(entry.status, PolicyStatus::UpdateRefused);
    assert_eq!(entry.last_error.as_deref(), Some(message.as_str()));
    let eval = host
        .place("p", &request(None))
        .await
        .expect("last good serves");
    assert_eq!(eval.value.reason, "v1");

    let host = common::host();
    host.load_module("p", fixture("good-v1"))
        .await
        .expect("good module loads");
    let error = host
        .load_module("p", bad.to_vec())
        .await
        .expect_err("refused as bytes too");
    assert_eq!(
        &error.to_string(),
        message,
        "same error as from the directory"
    );
    let generation = host.generation();
    let entry = generation.get("p").expect("entry kept");
    assert_eq!(entry.status, PolicyStatus::UpdateRefused);
    assert_eq!(entry.last_error.as_deref(), Some(message.as_str()));
    let eval = host
        .place("p", &request(None))
        .await
        .expect("last good serves");
    assert_eq!(eval.value.reason, "v1");
}

#[tokio::test]
async fn invalid_bytes_are_refused() {
    refused_on_load(b"definitely not wasm", "not a valid wasm module").await;
}

#[tokio::test]
async fn missing_export_is_refused() {
    refused_on_load(
        &fixture("missing-export"),
        "\"tmc_validate_settings\" is missing",
    )
    .await;
}

#[tokio::test]
async fn wrong_abi_version_is_refused() {
    refused_on_load(&fixture("wrong-abi"), "tmc_abi_version() returned 2").await;
}

#[tokio::test]
async fn foreign_import_is_refused() {
    refused_on_load(
        &fixture("bad-import"),
        "import env::steal_secrets is not allowed",
    )
    .await;
}

#[tokio::test]
async fn broken_module_without_good_version_is_refused_and_listed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = host();
    write_policy(dir.path(), "broken", b"\0asm garbage");
    let report = host.load_dir(dir.path()).await.expect("load");
    assert_eq!(report.refused.len(), 1);
    let generation = host.generation();
    let entry = generation.get("broken").expect("listed");
    assert_eq!(entry.status, PolicyStatus::Refused);
    assert!(entry.active.is_none());
    let err = host
        .place("broken", &request(None))
        .await
        .expect_err("nothing serves");
    assert!(matches!(err, PolicyError::UnknownPolicy { .. }), "{err}");
}

/// Loads `good-v1` as `good` and `fixture` as `bad`; returns the error of
/// placing with `bad`, after checking `good` still answers.
async fn runtime_failure(
    host: &PolicyHost,
    fixture_name: &str,
    replicas: Option<u32>,
) -> PolicyError {
    let dir = tempfile::tempdir().expect("tempdir");
    write_policy(dir.path(), "good", &fixture("good-v1"));
    write_policy(dir.path(), "bad", &fixture(fixture_name));
    let report = host.load_dir(dir.path()).await.expect("load");
    assert!(report.refused.is_empty(), "{report:?}");
    let err = host
        .place("bad", &request(replicas))
        .await
        .expect_err("bad policy fails");
    assert_eq!(err.policy(), "bad");
    assert!(err.to_string().contains("\"bad\""), "{err}");
    let eval = host
        .place("good", &request(replicas))
        .await
        .expect("good still works");
    assert_eq!(eval.value.reason, "v1");
    err
}

#[tokio::test]
async fn trap_is_reported() {
    let err = runtime_failure(&host(), "trap", None).await;
    assert!(
        matches!(&err, PolicyError::Trap { message, .. } if message.contains("unreachable")),
        "{err}"
    );
}

#[tokio::test]
async fn infinite_loop_hits_the_deadline() {
    let err = runtime_failure(&host(), "infinite-loop", None).await;
    assert!(
        matches!(err, PolicyError::Deadline { deadline, .. } if deadline == Duration::from_millis(100)),
        "{err}"
    );
}

#[tokio::test]
async fn infinite_loop_runs_out_of_fuel_when_the_deadline_is_far() {
    let host = host_with(HostConfig {
        deadline: Duration::from_secs(30),
        fuel: 5_000_000,
        ..HostConfig::default()
    });
    let err = runtime_failure(&host, "infinite-loop", None).await;
    assert!(
        matches!(
            err,
            PolicyError::Fuel {
                fuel: 5_000_000,
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn memory_bomb_hits_the_cap() {
    let err = runtime_failure(&host(), "memory-bomb", None).await;
    assert!(
        matches!(err, PolicyError::MemoryCap { cap, desired, .. } if cap == 64 << 20 && desired > cap),
        "{err}"
    );
}

#[tokio::test]
async fn huge_output_is_refused() {
    let err = runtime_failure(&host(), "huge-output", None).await;
    assert!(
        matches!(
            err,
            PolicyError::OutputTooLarge {
                len: 2097152,
                cap: 1048576,
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn malformed_output_is_refused() {
    let err = runtime_failure(&host(), "malformed-output", None).await;
    assert!(
        matches!(&err, PolicyError::MalformedOutput { message, .. } if message.contains("this is not JSON")),
        "{err}"
    );
}

#[tokio::test]
async fn guest_error_envelope_is_reported() {
    let err = runtime_failure(&host(), "guest-error", None).await;
    assert!(
        matches!(&err, PolicyError::Guest { message, .. } if message == "settings are nonsense"),
        "{err}"
    );
}

#[tokio::test]
async fn unknown_target_breaks_the_rules() {
    let err = runtime_failure(&host(), "unknown-target", None).await;
    assert!(
        matches!(&err, PolicyError::RuleViolation { violation: RuleViolation::UnknownTarget(t), .. } if t == "nowhere"),
        "{err}"
    );
}

#[tokio::test]
async fn replicas_not_adding_up_break_the_rules() {
    let err = runtime_failure(&host(), "bad-replicas", Some(3)).await;
    assert!(
        matches!(
            err,
            PolicyError::RuleViolation {
                violation: RuleViolation::ReplicaSum {
                    expected: 3,
                    got: 1
                },
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn forbidden_key_breaks_the_rules() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = host();
    write_policy(dir.path(), "stamper", &fixture("forbidden-key"));
    host.load_dir(dir.path()).await.expect("load");
    let req = TransformRequest {
        workload: Workload::default(),
        target: target("west", "us-west-1"),
        replicas: None,
        settings: serde_json::Value::Null,
    };
    let err = host.transform("stamper", &req).await.expect_err("refused");
    assert!(
        matches!(&err, PolicyError::RuleViolation { policy, violation: RuleViolation::ForbiddenKey { key, .. } } if policy == "stamper" && key == "state.workload.kcp.io/west"),
        "{err}"
    );
}

#[tokio::test]
async fn calling_the_wrong_kind_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = host();
    write_policy(dir.path(), "stamper", &fixture("forbidden-key"));
    host.load_dir(dir.path()).await.expect("load");
    let err = host
        .place("stamper", &request(None))
        .await
        .expect_err("not placement");
    assert!(matches!(err, PolicyError::WrongKind { .. }), "{err}");
}

#[tokio::test]
async fn guest_stdout_is_captured_not_fatal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = host();
    write_policy(dir.path(), "chatty", &fixture("chatty"));
    host.load_dir(dir.path()).await.expect("load");
    let eval = host.place("chatty", &request(None)).await.expect("works");
    assert_eq!(eval.value.reason, "v1");
}

#[tokio::test]
async fn same_bytes_compile_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = host();
    let bytes = fixture("good-v1");
    write_policy(dir.path(), "a", &bytes);
    write_policy(dir.path(), "b", &bytes);
    host.load_dir(dir.path()).await.expect("load");
    assert_eq!(host.compiled_modules(), 1);
    write_policy(dir.path(), "a", &fixture("good-v2"));
    host.load_dir(dir.path()).await.expect("reload");
    write_policy(dir.path(), "a", &bytes);
    host.load_dir(dir.path()).await.expect("reload back");
    assert_eq!(host.compiled_modules(), 2, "v1 came back from the cache");
}

/// `bytes` with a custom section named `tag` appended: the same module, another digest.
fn tagged(bytes: &[u8], tag: &str) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let payload_len = u8::try_from(1 + tag.len()).expect("a short tag");
    out.extend([
        0,
        payload_len,
        u8::try_from(tag.len()).expect("a short tag"),
    ]);
    out.extend(tag.as_bytes());
    out
}

#[tokio::test]
async fn replaced_versions_leave_the_memory_cache() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = host();
    let v1 = fixture("good-v1");
    let versions = tmc_policy_host::RETIRED_KEPT + 5;
    for i in 0..versions {
        write_policy(dir.path(), "a", &tagged(&v1, &format!("v{i}")));
        host.load_dir(dir.path()).await.expect("reload");
    }
    assert_eq!(host.compiled_modules(), versions as u64);
    assert_eq!(
        host.cached_modules(),
        1 + tmc_policy_host::RETIRED_KEPT,
        "the serving version and the last ones retired stay, no more"
    );
}

#[tokio::test]
async fn guest_stdout_past_the_cap_is_truncated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = host_with(HostConfig {
        stdio_cap: 8,
        ..HostConfig::default()
    });
    write_policy(dir.path(), "chatty", &fixture("chatty"));
    host.load_dir(dir.path()).await.expect("load");
    // fd_write takes the 8 bytes that fit and reports a short write; the
    // module ignores it, so the evaluation succeeds with truncated logs.
    let eval = host.place("chatty", &request(None)).await.expect("works");
    assert_eq!(eval.value.reason, "v1");
}

#[tokio::test]
async fn disk_cache_serves_a_second_host_without_compiling() {
    let cache = tempfile::tempdir().expect("tempdir");
    let dir = tempfile::tempdir().expect("tempdir");
    write_policy(dir.path(), "p", &fixture("good-v1"));
    let config = HostConfig {
        cache_dir: Some(cache.path().to_path_buf()),
        ..HostConfig::default()
    };
    let first = host_with(config.clone());
    first.load_dir(dir.path()).await.expect("load");
    assert_eq!(first.compiled_modules(), 1);
    // With tiered compilation the optimized code (the one written to disk)
    // is compiled in the background.
    first.wait_optimized().await;
    let entries = std::fs::read_dir(cache.path()).expect("cache dir").count();
    assert_eq!(entries, 1, "one serialized module");

    let second = host_with(config);
    second.load_dir(dir.path()).await.expect("load from cache");
    assert_eq!(second.compiled_modules(), 0);
    let eval = second.place("p", &request(None)).await.expect("works");
    assert_eq!(eval.value.reason, "v1");
}

#[tokio::test]
async fn fuel_zero_turns_metering_off_and_the_deadline_still_holds() {
    let host = host_with(HostConfig {
        fuel: 0,
        ..HostConfig::default()
    });
    let err = runtime_failure(&host, "infinite-loop", None).await;
    assert!(matches!(err, PolicyError::Deadline { .. }), "{err}");
}
