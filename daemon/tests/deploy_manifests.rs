//! The manifests to run tmc in a cluster (`config/deploy/`) are valid: the
//! tmc.toml they ship passes `tmcd check-config` (its mount paths pointed at
//! files that exist), and both kustomize bases pass a server-side dry run
//! against a real kube-apiserver, after the ServiceAccount and roles of
//! `config/rbac/physical-cluster.yaml` were applied for real.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, ensure};
use tmc_tests::testbed::TestBed;
use tmc_tests::testbed::binaries::{Binaries, repo_root};

fn run(program: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {}", program.display()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        out.status.success(),
        "{} {} failed ({}):\n{text}",
        program.display(),
        args.join(" "),
        out.status
    );
    Ok(text)
}

#[test]
fn the_shipped_tmc_toml_passes_check_config() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("etc-tmc");
    std::fs::create_dir_all(root.join("kubeconfigs"))?;
    std::fs::create_dir_all(root.join("policies"))?;
    for file in ["kcp", "west"] {
        std::fs::write(root.join(format!("kubeconfigs/{file}.kubeconfig")), "")?;
    }
    std::fs::create_dir_all(root.join("admin"))?;
    std::fs::write(root.join("admin/token"), "s3cret\n")?;
    let shipped = std::fs::read_to_string(repo_root().join("config/deploy/tmcd/tmc.toml"))?;
    ensure!(shipped.contains("/etc/tmc/"), "the mount paths changed");
    let config = dir.path().join("tmc.toml");
    std::fs::write(
        &config,
        shipped.replace("/etc/tmc/", &format!("{}/", root.display())),
    )?;
    let out = run(
        Path::new(env!("CARGO_BIN_EXE_tmcd")),
        &[
            "check-config",
            "--config",
            config.to_str().context("utf-8")?,
        ],
    )?;
    ensure!(out.contains("ok (2 clusters"), "{out}");
    Ok(())
}

/// What can be checked of the Containerfile without a container engine: each image's entry point is a
/// binary the workspace builds, copied from where the build stage puts it, and the images run as the
/// non-root user the Deployments expect.
#[test]
fn the_containerfile_copies_the_workspace_binaries_and_runs_as_non_root() -> Result<()> {
    let containerfile = std::fs::read_to_string(repo_root().join("Containerfile"))?;
    let workspace_bins = [
        ("tmcd", repo_root().join("daemon/src/main.rs")),
        ("tmc-syncer", repo_root().join("syncer/src/main.rs")),
    ];
    for (bin, main) in &workspace_bins {
        ensure!(main.is_file(), "{} is gone", main.display());
        ensure!(
            containerfile.contains(&format!("release/{bin}"))
                && containerfile.contains(&format!(
                    "COPY --from=build /out/{bin} /usr/local/bin/{bin}"
                ))
                && containerfile.contains(&format!("ENTRYPOINT [\"/usr/local/bin/{bin}\"]"))
                && containerfile.contains(&format!("FROM base AS {bin}")),
            "the Containerfile does not build, copy and start {bin}"
        );
    }
    ensure!(
        containerfile.contains("--locked") && containerfile.contains("-p tmc-daemon -p tmc-syncer"),
        "the build stage must build both packages from Cargo.lock"
    );
    ensure!(
        containerfile.contains("USER 65532:65532"),
        "the images must run as UID 65532"
    );
    for deployment in [
        "config/deploy/tmcd/deployment.yaml",
        "config/deploy/syncer/deployment.yaml",
    ] {
        let text = std::fs::read_to_string(repo_root().join(deployment))?;
        ensure!(
            text.contains("runAsNonRoot: true") && text.contains("runAsUser: 65532"),
            "{deployment} does not run as the image's user"
        );
    }
    // The name the images give tmcd is the one cargo gives it.
    ensure!(
        Path::new(env!("CARGO_BIN_EXE_tmcd"))
            .file_name()
            .is_some_and(|n| n == "tmcd"),
        "the daemon's binary is not called tmcd"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kustomize_bases_pass_a_server_side_dry_run() -> Result<()> {
    let bed = TestBed::builder()
        .clusters(["west"])
        .without_kcp()
        .start()
        .await?;
    let kubectl = Binaries::locate()?.path("kubectl");
    let kubeconfig = bed.kubeconfig_path("west")?;
    let kubeconfig = kubeconfig.to_str().context("utf-8")?;
    let deploy = repo_root().join("config/deploy");
    let rbac = repo_root().join("config/rbac/physical-cluster.yaml");
    run(
        &kubectl,
        &[
            "--kubeconfig",
            kubeconfig,
            "apply",
            "-f",
            rbac.to_str().context("utf-8")?,
        ],
    )?;
    for (base, expected) in [
        (
            "tmcd",
            &[
                "deployment.apps/tmcd created (server dry run)",
                "poddisruptionbudget.policy/tmcd created (server dry run)",
                "configmap/tmcd-config-",
                "service/tmcd-admin created (server dry run)",
            ][..],
        ),
        (
            "syncer",
            &["deployment.apps/tmc-syncer created (server dry run)"][..],
        ),
    ] {
        let dir = deploy.join(base);
        let out = run(
            &kubectl,
            &[
                "--kubeconfig",
                kubeconfig,
                "apply",
                "--dry-run=server",
                "-k",
                dir.to_str().context("utf-8")?,
            ],
        )?;
        for line in expected {
            ensure!(out.contains(line), "{base}: no {line:?} in:\n{out}");
        }
    }
    Ok(())
}
