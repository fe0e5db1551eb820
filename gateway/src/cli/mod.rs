//! The `chokepoint` command line: `run` (the gateway, [`crate::app`]), `check`, `explain`,
//! `recommend`, `map`, `status` (a running gateway's policies and rule hits),
//! `redirect` (print or remove the capture rules) and `crd`. The demo is a binary of its own
//! (`chokepoint-demo`), never part of this one.

mod check;
mod cluster;
mod explain;
mod map;
mod recommend;
mod records;
mod status;

use std::path::PathBuf;
use std::process::ExitCode;

use chokepoint_config::Diagnostics;
use chokepoint_config::settings::GatewaySettings;
use clap::{Parser, Subcommand};

pub use cluster::ClusterArgs;
pub use explain::{ExplainArgs, Output};
pub use map::MapArgs;
pub use recommend::RecommendArgs;
pub use status::StatusArgs;

/// What the CLI reports as failure; `main` prints it and exits 1.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The files have errors; every one of them is listed.
    #[error("{0}")]
    Invalid(Diagnostics),
    /// An argument could not be understood.
    #[error("{0}")]
    Argument(String),
    /// The capture rules could not be rendered or removed.
    #[error("{what}")]
    Capture {
        what: &'static str,
        #[source]
        source: chokepoint_redirect::Error,
    },
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
    #[error(transparent)]
    Gateway(#[from] crate::app::Error),
    #[error(transparent)]
    Kubernetes(#[from] chokepoint_config::kube::Error),
    /// The gateway's admin endpoint could not be reached.
    #[error(
        "cannot read /policies from the gateway's admin endpoint at {admin}: {source}; is the gateway running, and is this its listen.admin address?"
    )]
    Admin {
        admin: String,
        #[source]
        source: std::io::Error,
    },
    /// The admin endpoint answered something other than a policy report.
    #[error("the admin endpoint at {admin}: {what}")]
    AdminResponse { admin: String, what: String },
}

#[derive(Debug, Parser)]
#[command(
    name = "chokepoint",
    version,
    about = "Per-node egress gateway for Kubernetes network-policy-api tiers"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate policy and inventory files (or a cluster's objects); print every error as
    /// file:line:column (or Kind/name: field: message).
    Check {
        /// Files or directories (their .yaml, .yml and .json files, recursively).
        #[arg(required_unless_present_any = ["kubeconfig", "in_cluster"], conflicts_with_all = ["kubeconfig", "in_cluster"])]
        paths: Vec<PathBuf>,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Show the verdict for one connection and the tier-by-tier trace of how it was reached.
    Explain(ExplainArgs),
    /// Write a DeveloperNetworkPolicy per namespace that accepts exactly the allowed flows
    /// that flow-log and audit records show (domain names, Services, pods by labels, /32 or
    /// /128 networks; the ports and protocols seen).
    Recommend(RecommendArgs),
    /// Draw the observed flows of flow-log and audit records as a self-contained HTML map:
    /// namespaces, workloads, outside destinations, edges coloured allowed/denied/staged.
    Map(MapArgs),
    /// Show a running gateway's policies: which pods each selects on its node, per rule the
    /// flows it allowed, denied or passed and when it last did; staged and invalid ones too.
    Status(StatusArgs),
    /// Run the gateway: install the capture rules, proxy and decide pod egress (needs root).
    Run {
        /// The gateway settings file (YAML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Print the DeveloperNetworkPolicy CRD, generated from the types the gateway reads it with
    /// (`deploy/crds/developernetworkpolicies.yaml` is this output).
    Crd,
    /// Show the capture rules and routes for a settings file (`--print`, touches nothing), or
    /// remove them (`--remove`: after the gateway is gone for good; pods' egress is then no
    /// longer captured).
    Redirect {
        /// Print the nftables script and ip commands.
        #[arg(long, required_unless_present = "remove", conflicts_with = "remove")]
        print: bool,
        /// Remove the table and policy routing these settings install (needs root).
        #[arg(long)]
        remove: bool,
        #[arg(long)]
        config: PathBuf,
    },
}

/// Runs a parsed command; the exit code is 0 on success.
pub fn run(cli: Cli) -> Result<ExitCode, Error> {
    match cli.command {
        Command::Check { paths, cluster } => match cluster.source() {
            Some(source) => check::run_cluster(&source),
            None => check::run(&paths),
        },
        Command::Crd => {
            print!(
                "{}",
                chokepoint_config::kube::crd::developer_network_policy_yaml()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Explain(args) => explain::run(&args),
        Command::Recommend(args) => recommend::run(&args),
        Command::Map(args) => map::run(&args),
        Command::Status(args) => status::run(&args),
        Command::Run { config } => {
            let settings = GatewaySettings::load(&config).map_err(Error::Invalid)?;
            crate::app::run(settings)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Redirect {
            print: _,
            remove,
            config,
        } => {
            let settings = GatewaySettings::load(&config).map_err(Error::Invalid)?;
            let spec = crate::app::capture_spec(&settings);
            if remove {
                chokepoint_redirect::remove(&spec).map_err(|source| Error::Capture {
                    what: "removing the capture rules",
                    source,
                })?;
                eprintln!("capture rules removed: pod egress on this node is no longer captured");
                return Ok(ExitCode::SUCCESS);
            }
            let rendered = chokepoint_redirect::render(&spec).map_err(|source| Error::Capture {
                what: "rendering the capture rules",
                source,
            })?;
            print!("{}", rendered.to_shell());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Prints warnings to stderr and turns errors into [`Error::Invalid`].
fn report(diagnostics: Diagnostics) -> Result<(), Error> {
    for w in diagnostics.warnings() {
        eprintln!("{w}");
    }
    if diagnostics.has_errors() {
        let errors = diagnostics.errors().cloned().collect();
        return Err(Error::Invalid(Diagnostics(errors)));
    }
    Ok(())
}
