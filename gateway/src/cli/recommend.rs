//! `chokepoint recommend --flows FILE… [--namespace NS]… [--output yaml|json]`: a
//! DeveloperNetworkPolicy per namespace that accepts what the records show working.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use chokepoint_config::{Diagnostics, UnknownFields};
use clap::ValueEnum;

use super::{Error, report};
use crate::recommend::{Reading, policies};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Yaml,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct RecommendArgs {
    /// Flow-log and audit-log files (JSON lines, as the gateway writes them).
    #[arg(long = "flows", num_args = 1.., required = true)]
    pub flows: Vec<PathBuf>,
    /// Recommend for these source namespaces only (repeatable); default: every namespace
    /// the records show.
    #[arg(long = "namespace")]
    pub namespaces: Vec<String>,
    #[arg(long, value_enum, default_value_t = Format::Yaml)]
    pub output: Format,
}

pub fn run(args: &RecommendArgs) -> Result<ExitCode, Error> {
    let mut reading = Reading::default();
    let problems = super::records::read(&args.flows, |path, n, line| {
        reading.line(path, n, line, &args.namespaces)
    });
    reading.diagnostics.extend(problems);
    report(Diagnostics(std::mem::take(&mut reading.diagnostics)))?;
    for ns in &args.namespaces {
        if !reading.observed.contains_key(ns) {
            eprintln!(
                "warning: no allowed flow from namespace {ns} in the records: nothing to recommend for it"
            );
        }
    }
    let policies = policies(&reading.observed);
    let text = match args.output {
        Format::Yaml => yaml(&policies),
        Format::Json => json(&policies),
    };
    // What we print must be what `chokepoint check` accepts.
    let checked =
        chokepoint_config::load_str(Path::new("recommendation"), &text, UnknownFields::Reject);
    if checked.diagnostics.has_errors() {
        return Err(Error::Argument(format!(
            "the recommendation does not validate (a bug; please report it with the records):\n{}",
            checked.diagnostics
        )));
    }
    print!("{text}");
    eprintln!(
        "recommend: {} allowed flows read ({} denied left out): {} DeveloperNetworkPolicies for {} namespaces",
        reading.flows,
        reading.denied,
        policies.len(),
        reading.observed.len()
    );
    Ok(ExitCode::SUCCESS)
}

fn yaml(policies: &[chokepoint_config::api::developer::DeveloperNetworkPolicy]) -> String {
    let mut out = String::from(
        "# Written by `chokepoint recommend`: accepts what the flow and audit records show\n# working, nothing more. Review it before you apply it.\n",
    );
    for p in policies {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(p).expect("a policy serializes to YAML"));
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

fn json(policies: &[chokepoint_config::api::developer::DeveloperNetworkPolicy]) -> String {
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": policies});
    let mut out = serde_json::to_string_pretty(&list).expect("a policy serializes to JSON");
    out.push('\n');
    out
}
