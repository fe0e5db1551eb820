use std::process::ExitCode;

use clap::Parser;

use chokepoint::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Logs go to stderr: stdout carries command output and, with `sink: stdout`, the audit log.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CHOKEPOINT_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .init();
    match cli::run(cli) {
        Ok(code) => code,
        Err(
            cli::Error::Invalid(diagnostics)
            | cli::Error::Gateway(chokepoint::app::Error::Invalid(diagnostics)),
        ) => {
            eprint!("{diagnostics}");
            eprintln!("{} error(s)", diagnostics.0.len());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("chokepoint: {:#}", anyhow::Error::from(e));
            ExitCode::FAILURE
        }
    }
}
