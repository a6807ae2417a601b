//! `tmcd`: see `tmcd --help`.

use std::process::ExitCode;

use clap::CommandFactory;
use tmc_daemon::cli::{Cli, Command};
use tmc_daemon::{commands, config, policy_command};

#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tmc_daemon::allocator::Jemalloc = tmc_daemon::allocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse_with_config_defaults();
    tmc_daemon::admin::client::set_default_credentials(cli.admin_credentials());
    let outcome = match cli.command {
        Some(Command::Crds { split }) => commands::crds(split.as_deref()),
        Some(Command::CheckConfig) => config::load(&cli.config)
            .map(|c| {
                println!(
                    "{}: ok ({} clusters, {} resources)",
                    cli.config.display(),
                    c.clusters.len(),
                    c.sync.resources.len()
                )
            })
            .map_err(Into::into),
        Some(Command::Status { admin, json }) => commands::status(&admin, json).await,
        Some(Command::Explain {
            workload,
            workspace,
            admin,
            output,
        }) => commands::explain(&admin, workspace.as_deref(), &workload, output).await,
        Some(Command::Syncer(cmd)) => commands::syncer(cmd).await,
        Some(Command::Policy { command }) => policy_command::run(command, &cli.config).await,
        Some(Command::Verify) => commands::verify(&cli.config).await,
        Some(Command::Completions { shell }) => {
            tmc_syncer::process::print_completions(Cli::command(), shell).map_err(Into::into)
        }
        Some(Command::Man) => tmc_syncer::process::print_man(Cli::command()).map_err(Into::into),
        Some(Command::Run) | None => commands::run(&cli.config, cli.log_format).await,
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("tmcd: {err:#}");
            ExitCode::FAILURE
        }
    }
}
