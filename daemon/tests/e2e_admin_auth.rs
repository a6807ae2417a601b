//! The admin endpoint off loopback and over TLS: `/api/v1` needs the bearer
//! token of `admin.token_file` (401 without it or with a wrong one), POST
//! too, the probes stay open, `/metrics` needs it only when configured; with
//! `admin.tls_cert_file` it serves HTTPS, and the `tmcd` commands work over
//! it with `--admin-ca-file` (the token and the https URL taken from
//! `--config`). The control plane is a plain kube-apiserver of the bed.
//!
//! Run through `/work/notes/own-bins.sh` or plain `cargo test`: it spawns the
//! `tmcd` binary for the commands.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, ensure};
use tmc_daemon::admin::client::{Credentials, Reply, request_with};
use tmc_tests::testbed::TestBed;
use tmc_tests::testbed::pki::Pki;
use tmc_tests::testbed::wait::Poll;

use common::until;

/// A non-loopback address of this host, if it has one (a UDP socket's
/// local address towards a documentation address; nothing is sent).
fn outside_address() -> Option<IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

fn config_text(bed: &TestBed, admin: &str) -> Result<String> {
    common::hub_and_west_config(
        bed,
        &format!("[leader_election]\nenabled = false\n\n[admin]\n{admin}\n"),
    )
}

async fn start(
    dir: &Path,
    text: &str,
    logs: &tmc_daemon::telemetry::logs::SyncerLogs,
) -> Result<tmc_daemon::Daemon> {
    let path = dir.join("tmc.toml");
    std::fs::write(&path, text)?;
    let config = tmc_daemon::config::parse(&path, text, dir.to_path_buf())?;
    tmc_daemon::Daemon::start(config, logs.clone()).await
}

async fn call(admin: &str, credentials: &Credentials, method: &str, path: &str) -> Result<Reply> {
    request_with(admin, credentials, method, path)
        .await
        .with_context(|| format!("{method} {path} at {admin}"))
}

fn tmcd(args: &[&str]) -> Result<std::process::Output> {
    Command::new(env!("CARGO_BIN_EXE_tmcd"))
        .args(args)
        .output()
        .context("running tmcd")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_needs_the_token_off_loopback_and_serves_tls() -> Result<()> {
    let logs = tmc_daemon::logging::init_with_default(
        tmc_syncer::process::LogFormat::Text,
        "info,kube_client=off,kube_runtime=warn",
    );
    let bed = TestBed::builder()
        .clusters(["hub", "west"])
        .without_kcp()
        .start()
        .await?;
    let dir = tempfile::tempdir()?;
    std::fs::create_dir(dir.path().join("policies"))?;
    let token_file = dir.path().join("admin.token");
    std::fs::write(&token_file, "s3cret-token\n")?;
    let wrong_file = dir.path().join("wrong.token");
    std::fs::write(&wrong_file, "not-the-token\n")?;
    let none = Credentials::default();
    let with_token = Credentials {
        token_file: Some(token_file.clone()),
        ca_file: None,
    };
    let wrong = Credentials {
        token_file: Some(wrong_file.clone()),
        ca_file: None,
    };

    // Off loopback: every address of the host, with a token.
    let daemon = start(
        dir.path(),
        &config_text(
            &bed,
            "address = \"0.0.0.0:0\"\ntoken_file = \"admin.token\"",
        )?,
        &logs,
    )
    .await?;
    let port = daemon.admin_addr().port();
    let ip = outside_address().unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let admin = format!("http://{}", SocketAddr::new(ip, port));
    for probe in ["/healthz", "/readyz"] {
        let reply = call(&admin, &none, "GET", probe).await?;
        ensure!(reply.status == 200, "{probe} without a token: {reply:?}");
    }
    let reply = call(&admin, &none, "GET", "/api/v1/status").await?;
    ensure!(
        reply.status == 401 && reply.body.contains("--admin-token-file"),
        "status without a token: {reply:?}"
    );
    let reply = call(&admin, &wrong, "GET", "/api/v1/status").await?;
    ensure!(
        reply.status == 401 && reply.body.contains("wrong bearer token"),
        "status with a wrong token: {reply:?}"
    );
    let reply = call(&admin, &with_token, "GET", "/api/v1/status").await?;
    ensure!(
        reply.status == 200 && reply.body.contains("\"identity\""),
        "status with the token: {reply:?}"
    );
    let resync = "/api/v1/syncers/west/resync";
    let reply = call(&admin, &none, "POST", resync).await?;
    ensure!(reply.status == 401, "POST without a token: {reply:?}");
    let reply = call(&admin, &wrong, "POST", resync).await?;
    ensure!(reply.status == 401, "POST with a wrong token: {reply:?}");
    until("the resync POST with the token is accepted", || async {
        let reply = call(&admin, &with_token, "POST", resync).await?;
        Ok(match reply.status {
            200 => Poll::Ready(()),
            409 => Poll::Pending(format!("not the leader yet: {}", reply.body)),
            _ => anyhow::bail!("POST with the token: {reply:?}"),
        })
    })
    .await?;
    let reply = call(&admin, &none, "GET", "/metrics").await?;
    ensure!(
        reply.status == 200,
        "/metrics is open unless admin.metrics_need_token: {reply:?}"
    );
    daemon.stop().await;

    // TLS on loopback, /metrics behind the token too.
    let pki = Pki::generate(&dir.path().join("pki"))?;
    let admin_section = format!(
        "address = \"127.0.0.1:0\"\ntoken_file = \"admin.token\"\nmetrics_need_token = true\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"",
        pki.server_cert.display(),
        pki.server_key.display()
    );
    let text = config_text(&bed, &admin_section)?;
    let daemon = start(dir.path(), &text, &logs).await?;
    let port = daemon.admin_addr().port();
    let https = format!("https://127.0.0.1:{port}");
    let trusted = Credentials {
        token_file: Some(token_file.clone()),
        ca_file: Some(pki.ca_cert.clone()),
    };
    let reply = call(&https, &trusted, "GET", "/api/v1/status").await?;
    ensure!(reply.status == 200, "status over TLS: {reply:?}");
    let anonymous = Credentials {
        token_file: None,
        ca_file: Some(pki.ca_cert.clone()),
    };
    let reply = call(&https, &anonymous, "GET", "/metrics").await?;
    ensure!(
        reply.status == 401,
        "/metrics with metrics_need_token: {reply:?}"
    );
    let reply = call(&https, &trusted, "GET", "/metrics").await?;
    ensure!(
        reply.status == 200 && reply.body.contains("# EOF"),
        "/metrics with the token: {reply:?}"
    );
    let reply = call(&https, &anonymous, "GET", "/healthz").await?;
    ensure!(reply.status == 200, "/healthz over TLS: {reply:?}");
    let untrusted = request_with(&https, &with_token, "GET", "/api/v1/status").await;
    ensure!(
        untrusted
            .as_ref()
            .is_err_and(|e| format!("{e:#}").contains("--admin-ca-file")),
        "https without a CA: {untrusted:?}"
    );
    let plain = request_with(
        &format!("http://127.0.0.1:{port}"),
        &with_token,
        "GET",
        "/api/v1/status",
    )
    .await;
    ensure!(
        !plain.as_ref().is_ok_and(|r| r.status == 200),
        "plain HTTP answered on the TLS port: {plain:?}"
    );

    // The commands over TLS: the token and the https URL from --config (its
    // admin.address names port 0, so the URL is given), the CA by flag.
    let config = dir.path().join("tmc.toml");
    let ca = pki.ca_cert.display().to_string();
    let cfg = config.display().to_string();
    let out = tmcd(&[
        "status",
        "--json",
        "--config",
        &cfg,
        "--admin",
        &https,
        "--admin-ca-file",
        &ca,
    ])?;
    ensure!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("\"identity\""),
        "tmcd status over TLS: {out:?}"
    );
    let out = tmcd(&[
        "syncer",
        "resync",
        "--cluster",
        "west",
        "--config",
        &cfg,
        "--admin",
        &https,
        "--admin-ca-file",
        &ca,
    ])?;
    ensure!(
        out.status.success()
            && String::from_utf8_lossy(&out.stdout).contains("re-queued every workload for west"),
        "tmcd syncer resync over TLS: {out:?}"
    );
    let out = tmcd(&[
        "policy",
        "list",
        "--config",
        &cfg,
        "--admin",
        &https,
        "--admin-ca-file",
        &ca,
    ])?;
    ensure!(out.status.success(), "tmcd policy list over TLS: {out:?}");
    // Without the token (another config, none given): refused, naming the fix.
    let empty = dir.path().join("none.toml");
    std::fs::write(&empty, "")?;
    let out = tmcd(&[
        "status",
        "--config",
        &empty.display().to_string(),
        "--admin",
        &https,
        "--admin-ca-file",
        &ca,
    ])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && stderr.contains("--admin-token-file"),
        "tmcd status without a token: {out:?}"
    );
    daemon.stop().await;
    Ok(())
}

/// `admin.address` off loopback without `admin.token_file` stops tmcd before
/// it connects anywhere, naming the key and the fix.
#[test]
fn off_loopback_without_a_token_is_refused_at_start() -> Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::create_dir(dir.path().join("policies"))?;
    let config: PathBuf = dir.path().join("tmc.toml");
    std::fs::write(&config, "[admin]\naddress = \"0.0.0.0:9470\"\n")?;
    for command in [&["check-config"][..], &["run"][..]] {
        let mut args = command.to_vec();
        let path = config.display().to_string();
        args.extend(["--config", &path]);
        let out = tmcd(&args)?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            !out.status.success()
                && stderr.contains("tmc.toml:2:11")
                && stderr.contains("admin.token_file"),
            "tmcd {command:?}: {out:?}"
        );
    }
    Ok(())
}
