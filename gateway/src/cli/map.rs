//! `chokepoint map --flows FILE… --policies PATH… --inventory FILE -o map.html`: observed
//! flows as a self-contained HTML dependency map.

use std::path::PathBuf;
use std::process::ExitCode;

use chokepoint_config::{Diagnostics, UnknownFields, load_paths};

use super::{Error, report};
use crate::map::graph::Builder;
use crate::map::page;

#[derive(Debug, clap::Args)]
pub struct MapArgs {
    /// Flow-log and audit-log files (JSON lines, as the gateway writes them).
    #[arg(long = "flows", num_args = 1.., required = true)]
    pub flows: Vec<PathBuf>,
    /// Policy files or directories: the map lists which policies select each workload.
    #[arg(long, num_args = 1..)]
    pub policies: Vec<PathBuf>,
    /// Namespaces and pods (`kubectl get ns,pods -A -o yaml`): pods are folded into their
    /// workloads by their labels.
    #[arg(long)]
    pub inventory: Option<PathBuf>,
    /// The HTML file to write.
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
}

pub fn run(args: &MapArgs) -> Result<ExitCode, Error> {
    let mut paths = args.policies.clone();
    paths.extend(args.inventory.clone());
    let loaded = load_paths(&paths, UnknownFields::Reject);
    report(loaded.diagnostics)?;
    let mut builder = Builder::new(&loaded.world);
    let problems = super::records::read(&args.flows, |_, _, line| builder.line(&line));
    report(Diagnostics(problems))?;
    let graph = builder.finish();
    let sources: Vec<String> = args.flows.iter().map(|p| p.display().to_string()).collect();
    let html = page::render(&graph, &format!("from {}", sources.join(", ")));
    std::fs::write(&args.output, html)?;
    let namespaces = graph.groups.iter().filter(|g| *g != "external").count();
    eprintln!(
        "map: {namespaces} namespaces, {} nodes, {} edges written to {}",
        graph.nodes.len(),
        graph.edges.len(),
        args.output.display()
    );
    Ok(ExitCode::SUCCESS)
}
