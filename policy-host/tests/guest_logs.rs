//! Guest stdout and stderr reach tmcd's log at debug level only. Its own test
//! binary: `tracing` caches per-callsite interest process-wide, so evaluations
//! on other test threads would race with the scoped subscribers used here.

mod common;

use common::*;

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct LogBuffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What `chatty` logs when evaluated under a subscriber at `level`.
fn chatty_log(level: tracing::Level) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    write_policy(dir.path(), "chatty", &fixture("chatty"));
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let host = runtime.block_on(async {
        let host = host();
        host.load_dir(dir.path()).await.expect("load");
        host
    });
    let buffer = LogBuffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // place_blocking runs the guest on this thread, under this subscriber.
    let eval = tracing::subscriber::with_default(subscriber, || {
        host.place_blocking("chatty", &request(None))
    });
    assert_eq!(eval.expect("works").value.reason, "v1");
    let text = buffer.0.lock().expect("log buffer").clone();
    String::from_utf8(text).expect("utf-8 log")
}

#[test]
fn guest_stdout_is_logged_at_debug_level_only() {
    let info = chatty_log(tracing::Level::INFO);
    assert!(!info.contains("hello from the guest"), "{info}");
    let debug = chatty_log(tracing::Level::DEBUG);
    let line = debug
        .lines()
        .find(|l| l.contains("hello from the guest"))
        .unwrap_or_else(|| panic!("guest line logged at debug: {debug}"));
    assert!(
        line.contains("DEBUG") && line.contains("chatty") && line.contains("stdout"),
        "{line}"
    );
}
