//! `tmcd policy <subcommand>`: reads the flags and runs
//! [`check`](crate::policy_cli::check), [`eval`](crate::policy_cli::eval),
//! [`diff`](crate::policy_diff::diff) or [`list`](crate::policy_cli::list).

use std::path::Path;

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use crate::cli::PolicyCommand;
use crate::policy_cli::{self, EvalArgs};
use crate::policy_diff;

/// Runs one `tmcd policy` subcommand; `config` is the `tmc.toml` that `diff` reads.
pub async fn run(cmd: PolicyCommand, config: &Path) -> Result<()> {
    match cmd {
        PolicyCommand::Eval {
            module,
            workload,
            targets,
            placement,
            settings,
            settings_file,
            target,
            all_ready,
            json,
        } => {
            let settings = read_settings(settings.as_deref(), settings_file.as_deref())?;
            let args = EvalArgs {
                module,
                workload,
                targets,
                placement,
                settings,
                target,
                all_ready,
            };
            let report = policy_cli::eval(&args).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", policy_cli::render_eval(&report));
            }
            Ok(())
        }
        PolicyCommand::Check { module, settings } => {
            let settings = read_settings(settings.as_deref(), None)?;
            let loaded = policy_cli::load(&module).await?;
            print!("{}", policy_cli::check(&loaded, settings.as_ref()).await?);
            Ok(())
        }
        PolicyCommand::Diff {
            module,
            as_name,
            all,
            json,
            exit_code,
        } => {
            let config = crate::config::load(config)?;
            let report =
                policy_diff::diff(&config, &policy_diff::DiffArgs { module, as_name }).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", policy_diff::render_diff(&report, all));
            }
            if exit_code && report.changes().next().is_some() {
                bail!("decisions would change (--exit-code)");
            }
            Ok(())
        }
        PolicyCommand::List { admin, json } => policy_cli::list(&admin, json).await,
    }
}

/// `--settings JSON` or `--settings-file F` (JSON or YAML).
fn read_settings(inline: Option<&str>, file: Option<&Path>) -> Result<Option<Value>> {
    match (inline, file) {
        (Some(_), Some(_)) => bail!("give --settings or --settings-file, not both"),
        (Some(text), None) => serde_json::from_str(text).map(Some).with_context(|| {
            format!("--settings {text:?} is not JSON (fix: e.g. --settings '{{\"mode\":\"preferred\"}}')")
        }),
        (None, Some(path)) => policy_cli::read_doc(path).map(Some),
        (None, None) => Ok(None),
    }
}
