use std::process::ExitCode;

use clap::Parser;

use chokepoint::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli::run(cli) {
        Ok(code) => code,
        Err(cli::Error::Invalid(diagnostics)) => {
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
