//! `chokepoint explain`: which policy decides a connection, and how the tiers got there; for a
//! Service, the verdict on each of its ready backends ([`services`]).

mod services;

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use chokepoint_config::model::{Action, Protocol};
use chokepoint_config::settings::{Choice, DefaultAction};
use chokepoint_config::{UnknownFields, load_paths};
use clap::ValueEnum;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use serde_json::{Value, json};

use super::{ClusterArgs, Error, cluster, report};
use crate::audit::ServiceName;
use crate::policy::{
    Difference, Flow, Options, Outcome, PolicyRef, Snapshot, Step, TierName, Verdict,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    /// Policy files or directories.
    #[arg(long, num_args = 1.., required_unless_present_any = ["kubeconfig", "in_cluster"], conflicts_with_all = ["kubeconfig", "in_cluster"])]
    pub policies: Vec<PathBuf>,
    /// Namespaces, pods, nodes, Services and EndpointSlices (`kubectl get
    /// ns,pods,nodes,svc,endpointslices -A -o yaml`).
    #[arg(long, conflicts_with_all = ["kubeconfig", "in_cluster"])]
    pub inventory: Option<PathBuf>,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// The source: NAMESPACE/POD or an IP.
    #[arg(long)]
    pub from: String,
    /// The destination: IP:PORT[/tcp|udp|sctp] or NAMESPACE/POD:PORT[/proto] ([v6]:PORT for
    /// IPv6); a Service port as svc/NAMESPACE/NAME:PORT[/proto] (PORT: number or name) or
    /// CLUSTERIP:PORT[/proto]: the verdict for every ready backend.
    #[arg(long)]
    pub to: String,
    /// A DNS name the destination is known as (for domainNames rules); repeatable.
    #[arg(long = "name")]
    pub names: Vec<String>,
    #[arg(long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// The verdict when no tier decides.
    #[arg(long, default_value = "allow", value_parser = action_parser())]
    pub default_action: DefaultAction,
    /// Also decide the connection as if the staged policies (annotated
    /// `policy.chokepoint.dev/mode: staged`) were enforced, and show both verdicts and traces.
    #[arg(long)]
    pub staged: bool,
}

/// `allow` or `deny`: the names and type of the settings' `defaultAction`.
fn action_parser() -> impl TypedValueParser<Value = DefaultAction> {
    PossibleValuesParser::new(DefaultAction::NAMES.iter().map(|(name, _)| *name))
        .try_map(|name| DefaultAction::from_name(&name).ok_or("not an action"))
}

pub fn run(args: &ExplainArgs) -> Result<ExitCode, Error> {
    let world = match args.cluster.source() {
        Some(source) => {
            // As the gateway does: invalid objects are left out, the rest decides.
            let objects = cluster::read(&source)?;
            for d in objects.diagnostics().0 {
                eprintln!("{d}");
            }
            objects.world()
        }
        None => {
            let mut paths = args.policies.clone();
            paths.extend(args.inventory.clone());
            let loaded = load_paths(&paths, UnknownFields::Reject);
            report(loaded.diagnostics)?;
            loaded.world
        }
    };
    let default_decision = args.default_action.into();
    let snapshot = Snapshot::compile(
        &world,
        Options {
            default_decision,
            ..Options::default()
        },
    );

    let src = resolve_source(&snapshot, &args.from)?;
    let names: Vec<&str> = args.names.iter().map(String::as_str).collect();
    if let Some(service) = services::target(&snapshot, &args.to)? {
        if args.staged {
            return Err(Error::Argument(
                "--staged decides one destination: give a backend (IP:PORT or NAMESPACE/POD:PORT), not a Service".into(),
            ));
        }
        return services::run(&snapshot, src, &service, &names, args.output);
    }
    let (dst, port, protocol) = resolve_destination(&snapshot, &args.to)?;
    let flow = Flow {
        src,
        dst,
        protocol,
        port,
        names: &names,
        addressed: None,
    };
    let (verdict, trace) = snapshot.explain(&flow);
    let staged = args
        .staged
        .then(|| StagedExplain::of(&snapshot, &flow, &verdict));

    let mut out = std::io::stdout().lock();
    match args.output {
        Output::Json => {
            let mut json = to_json(&snapshot, &flow, &verdict, &trace);
            if let Some(staged) = &staged {
                json["staged"] = staged.to_json();
            }
            serde_json::to_writer_pretty(&mut out, &json).map_err(std::io::Error::from)?;
            writeln!(out)?;
        }
        Output::Table => {
            write_table(&mut out, &snapshot, &flow, &verdict, &trace)?;
            if let Some(staged) = &staged {
                staged.write_table(&mut out)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The decision as if the staged policies were enforced, for `--staged`.
struct StagedExplain<'s> {
    /// The snapshot with the staged policies enforced (the enforced one when none is staged).
    snapshot: &'s Snapshot,
    any_staged: bool,
    verdict: Verdict,
    trace: Vec<Step>,
    difference: Option<Difference>,
}

impl<'s> StagedExplain<'s> {
    fn of(snapshot: &'s Snapshot, flow: &Flow<'_>, verdict: &Verdict) -> Self {
        let staged = snapshot.staged();
        let as_if = staged.unwrap_or(snapshot);
        let (staged_verdict, trace) = as_if.explain(flow);
        StagedExplain {
            snapshot: as_if,
            any_staged: staged.is_some(),
            verdict: staged_verdict,
            trace,
            difference: snapshot
                .staged_difference(flow, verdict)
                .map(|d| d.difference),
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "policies_staged": self.any_staged,
            "difference": self.difference.map(Difference::as_str),
            "verdict": self.verdict.decision.to_string(),
            "reason": self.verdict.reason.as_str(),
            "decided_by": decided_by_json(self.snapshot, &self.verdict),
            "trace": trace_json(self.snapshot, &self.trace),
        })
    }

    fn write_table(&self, out: &mut impl Write) -> std::io::Result<()> {
        writeln!(out)?;
        if !self.any_staged {
            return writeln!(out, "staged: no policy is staged");
        }
        writeln!(out, "as if the staged policies were enforced:")?;
        writeln!(out)?;
        write_tiers(out, self.snapshot, &self.verdict, &self.trace)?;
        writeln!(out)?;
        writeln!(
            out,
            "staged verdict: {}",
            verdict_text(self.snapshot, &self.verdict)
        )?;
        let difference = match self.difference {
            Some(Difference::WouldDeny) => "would_deny (allowed now, the staged policies deny it)",
            Some(Difference::WouldAllow) => {
                "would_allow (denied now, the staged policies allow it)"
            }
            Some(Difference::OtherPolicy) => {
                "other_policy (same verdict, another policy or rule decides)"
            }
            None => "none",
        };
        writeln!(out, "difference: {difference}")
    }
}

fn resolve_source(snapshot: &Snapshot, from: &str) -> Result<IpAddr, Error> {
    if let Ok(ip) = from.parse() {
        return Ok(ip);
    }
    pod_ip(snapshot, from)
}

fn pod_ip(snapshot: &Snapshot, spec: &str) -> Result<IpAddr, Error> {
    let Some((ns, name)) = spec.split_once('/') else {
        return Err(Error::Argument(format!(
            "`{spec}` is neither an IP nor NAMESPACE/POD"
        )));
    };
    let pod = snapshot
        .pod_by_name(ns, name)
        .ok_or_else(|| Error::Argument(format!("pod {ns}/{name} is not in the inventory")))?;
    snapshot.pod(pod).ips.first().copied().ok_or_else(|| {
        Error::Argument(format!(
            "pod {ns}/{name} has no IP in the inventory (status.podIPs)"
        ))
    })
}

/// Splits a trailing `/tcp`, `/udp` or `/sctp` off.
fn split_protocol(to: &str) -> (&str, Option<Protocol>) {
    match to.rsplit_once('/') {
        Some((rest, "tcp")) => (rest, Some(Protocol::Tcp)),
        Some((rest, "udp")) => (rest, Some(Protocol::Udp)),
        Some((rest, "sctp")) => (rest, Some(Protocol::Sctp)),
        _ => (to, None),
    }
}

/// `IP:PORT[/proto]`, `[IPv6]:PORT[/proto]` or `NAMESPACE/POD:PORT[/proto]`.
fn resolve_destination(snapshot: &Snapshot, to: &str) -> Result<(IpAddr, u16, Protocol), Error> {
    let (rest, protocol) = split_protocol(to);
    let protocol = protocol.unwrap_or(Protocol::Tcp);
    let bad = || {
        Error::Argument(format!(
            "`{to}`: expected IP:PORT[/tcp|udp|sctp] or NAMESPACE/POD:PORT[/proto]"
        ))
    };
    let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().ok().filter(|p| *p > 0).ok_or_else(bad)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let ip = match host.parse() {
        Ok(ip) => ip,
        Err(_) if host.contains('/') => pod_ip(snapshot, host)?,
        Err(_) => return Err(bad()),
    };
    Ok((ip, port, protocol))
}

/// Name, namespace, priority, kind and the rule name of a policy reference.
struct PolicyInfo {
    name: String,
    namespace: Option<String>,
    priority: Option<u32>,
    kind: &'static str,
    rule: Option<String>,
}

fn policy_info(snapshot: &Snapshot, policy: PolicyRef, rule_index: Option<u16>) -> PolicyInfo {
    match policy {
        PolicyRef::Cluster(i) => {
            let p = snapshot
                .cluster_policy(i)
                .expect("reference from this snapshot");
            PolicyInfo {
                name: p.name.clone(),
                namespace: None,
                priority: Some(p.priority),
                kind: p.kind.kind(),
                rule: rule_index
                    .and_then(|r| p.egress.get(r as usize))
                    .and_then(|r| r.name.clone()),
            }
        }
        PolicyRef::Developer(i) => {
            let p = snapshot
                .developer_policy(i)
                .expect("reference from this snapshot");
            PolicyInfo {
                name: p.name.clone(),
                namespace: Some(p.namespace.clone()),
                priority: None,
                kind: "DeveloperNetworkPolicy",
                rule: rule_index
                    .and_then(|r| p.egress.get(r as usize))
                    .and_then(|r| r.name.clone()),
            }
        }
        PolicyRef::Network(i) => {
            let p = snapshot
                .network_policy(i)
                .expect("reference from this snapshot");
            PolicyInfo {
                name: p.name.clone(),
                namespace: Some(p.namespace.clone()),
                priority: None,
                kind: "NetworkPolicy",
                rule: None,
            }
        }
    }
}

/// A NetworkPolicy v1 step: its rules only allow, so it has no action of its own.
fn is_network_policy(policy: Option<PolicyRef>) -> bool {
    matches!(policy, Some(PolicyRef::Network(_)))
}

fn outcome_str(o: Outcome) -> &'static str {
    match o {
        Outcome::Matched(_) => "matched",
        Outcome::NoMatch => "no_match",
        Outcome::IsolatedNoMatch => "isolated_no_match",
        Outcome::NotIsolated => "not_isolated",
        Outcome::Default => "default",
        Outcome::Exempt => "exempt",
    }
}

/// Who the endpoint is, for people: `ns/pod`, `node/name`, or nothing.
fn endpoint_json(snapshot: &Snapshot, ip: IpAddr) -> Value {
    match snapshot.pod_by_ip(ip) {
        Some(p) => {
            let pod = snapshot.pod(p);
            json!({"ip": ip.to_string(), "namespace": pod.namespace, "pod": pod.name})
        }
        None => match snapshot.node_by_ip(ip) {
            Some(n) => json!({"ip": ip.to_string(), "node": n.name}),
            None => json!({"ip": ip.to_string()}),
        },
    }
}

/// `decided_by` of the JSON output.
fn decided_by_json(snapshot: &Snapshot, verdict: &Verdict) -> Value {
    let d = &verdict.decided_by;
    let info = d.policy.map(|p| policy_info(snapshot, p, d.rule_index));
    json!({
        "tier": d.tier.to_string(),
        "kind": info.as_ref().map(|i| i.kind),
        "policy": info.as_ref().map(|i| i.name.clone()),
        "namespace": info.as_ref().and_then(|i| i.namespace.clone()),
        "priority": info.as_ref().and_then(|i| i.priority),
        "rule": info.as_ref().and_then(|i| i.rule.clone()),
        "rule_index": d.rule_index,
        "action": d.action.map(|a| a.to_string()),
    })
}

/// The `trace` of the JSON output.
fn trace_json(snapshot: &Snapshot, trace: &[Step]) -> Value {
    trace
        .iter()
        .map(|s| {
            let info = s.policy.map(|p| policy_info(snapshot, p, s.rule_index));
            json!({
                "tier": s.tier.to_string(),
                "kind": info.as_ref().map(|i| i.kind),
                "policy": info.as_ref().map(|i| i.name.clone()),
                "namespace": info.as_ref().and_then(|i| i.namespace.clone()),
                "priority": info.as_ref().and_then(|i| i.priority),
                "rule": info.as_ref().and_then(|i| i.rule.clone()),
                "rule_index": s.rule_index,
                "action": match s.outcome { Outcome::Matched(a) if !is_network_policy(s.policy) => Some(a.to_string()), _ => None },
                "result": outcome_str(s.outcome),
            })
        })
        .collect()
}

fn to_json(snapshot: &Snapshot, flow: &Flow<'_>, verdict: &Verdict, trace: &[Step]) -> Value {
    let decided_by = decided_by_json(snapshot, verdict);
    let steps = trace_json(snapshot, trace);
    let mut destination = endpoint_json(snapshot, flow.dst);
    destination["port"] = json!(flow.port);
    destination["protocol"] = json!(flow.protocol.to_string());
    destination["names"] = json!(flow.names);
    if let Some(addressed) = flow.addressed {
        if let Some(service) = ServiceName::at(snapshot, addressed, flow.protocol) {
            destination["service"] = json!(service);
        }
        destination["cluster_ip"] = json!(addressed.ip().to_canonical().to_string());
    }
    json!({
        "verdict": verdict.decision.to_string(),
        "reason": verdict.reason.as_str(),
        "decided_by": decided_by,
        "source": endpoint_json(snapshot, flow.src),
        "destination": destination,
        "trace": steps,
    })
}

fn endpoint_text(snapshot: &Snapshot, ip: IpAddr) -> String {
    match snapshot.pod_by_ip(ip) {
        Some(p) => {
            let pod = snapshot.pod(p);
            format!("{}/{} ({ip})", pod.namespace, pod.name)
        }
        None => match snapshot.node_by_ip(ip) {
            Some(n) => format!("node {} ({ip})", n.name),
            None if snapshot.is_host_network(ip) => format!("{ip} (host network)"),
            None => format!("{ip}"),
        },
    }
}

fn write_table(
    out: &mut impl Write,
    snapshot: &Snapshot,
    flow: &Flow<'_>,
    verdict: &Verdict,
    trace: &[Step],
) -> std::io::Result<()> {
    writeln!(out, "from   {}", endpoint_text(snapshot, flow.src))?;
    let names = if flow.names.is_empty() {
        String::new()
    } else {
        format!("  names: {}", flow.names.join(", "))
    };
    writeln!(
        out,
        "to     {} port {}/{}{names}",
        endpoint_text(snapshot, flow.dst),
        flow.port,
        flow.protocol
    )?;
    writeln!(out)?;
    write_tiers(out, snapshot, verdict, trace)?;
    writeln!(out)?;
    writeln!(out, "verdict: {}", verdict_text(snapshot, verdict))
}

/// The trace as a table: one row per tier, or per policy consulted in it.
fn write_tiers(
    out: &mut impl Write,
    snapshot: &Snapshot,
    verdict: &Verdict,
    trace: &[Step],
) -> std::io::Result<()> {
    let decided_at = trace.len().saturating_sub(1);
    let exempt = trace.iter().any(|s| s.outcome == Outcome::Exempt);
    let tiers = [
        TierName::Admin,
        TierName::NetworkPolicy,
        TierName::Baseline,
        TierName::Default,
    ];
    let reached = |t: TierName| trace.iter().any(|s| s.tier == t);
    let last_reached = tiers.iter().rposition(|t| reached(*t)).unwrap_or(0);
    let mut rows: Vec<[String; 4]> = Vec::new();
    for (ti, tier) in tiers.iter().enumerate() {
        if !exempt && !reached(*tier) {
            let note = if ti < last_reached {
                "no policy selects the source"
            } else {
                "not reached"
            };
            rows.push([
                tier.to_string(),
                String::new(),
                String::new(),
                note.to_owned(),
            ]);
            continue;
        }
        for (i, s) in trace.iter().enumerate().filter(|(_, s)| s.tier == *tier) {
            rows.push(trace_row(snapshot, verdict, s, i == decided_at));
        }
    }
    let widths: Vec<usize> = (0..3)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for r in &rows {
        let mut line = String::new();
        for c in 0..3 {
            line.push_str(&format!("{:w$}  ", r[c], w = widths[c]));
        }
        line.push_str(&r[3]);
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

/// `DENY by Admin cnp/name rule[0] "name" (rule)`.
fn verdict_text(snapshot: &Snapshot, verdict: &Verdict) -> String {
    let d = &verdict.decided_by;
    let mut by = d.tier.to_string();
    if let Some(p) = d.policy {
        by.push(' ');
        by.push_str(&snapshot.policy_label(p));
        if let Some(r) = d.rule_index {
            by.push_str(&format!(" rule[{r}]"));
            if let Some(name) = policy_info(snapshot, p, Some(r)).rule {
                by.push_str(&format!(" \"{name}\""));
            }
        }
    }
    format!(
        "{} by {by} ({})",
        verdict.decision.to_string().to_uppercase(),
        verdict.reason.as_str()
    )
}

/// One table row for a trace step: tier, policy, rule, what happened.
fn trace_row(snapshot: &Snapshot, verdict: &Verdict, s: &Step, last: bool) -> [String; 4] {
    let (policy, rule) = match s.policy {
        Some(p) => {
            let info = policy_info(snapshot, p, s.rule_index);
            let policy = match (p, info.priority) {
                (PolicyRef::Cluster(_), Some(prio)) => {
                    format!("{} (priority {prio})", snapshot.policy_label(p))
                }
                _ => snapshot.policy_label(p),
            };
            let rule = match (s.rule_index, info.rule) {
                (Some(r), Some(name)) => format!("rule[{r}] \"{name}\""),
                (Some(r), None) => format!("rule[{r}]"),
                (None, _) => String::new(),
            };
            (policy, rule)
        }
        None => (String::new(), String::new()),
    };
    let mut result = match s.outcome {
        Outcome::Matched(_) if is_network_policy(s.policy) => "allows".to_owned(),
        Outcome::Matched(Action::Accept) if matches!(s.policy, Some(PolicyRef::Developer(_))) => {
            "Accept (no DeveloperNetworkPolicy rule denies)".to_owned()
        }
        Outcome::Matched(a) => a.to_string(),
        Outcome::NoMatch => "no rule matched".to_owned(),
        Outcome::IsolatedNoMatch => "isolates egress, no rule matched".to_owned(),
        Outcome::NotIsolated => "no NetworkPolicy isolates this pod's egress".to_owned(),
        Outcome::Default => format!("default: {}", snapshot.options().default_decision),
        Outcome::Exempt => format!("exempt ({})", verdict.reason.as_str().replace('_', " ")),
    };
    if last {
        if verdict.reason == crate::policy::Reason::NetworkPolicyIsolation {
            result.push_str("; nothing allows it");
        }
        result.push_str("   <- decided");
    }
    [s.tier.to_string(), policy, rule, result]
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn default_action(extra: &[&str]) -> Result<DefaultAction, clap::Error> {
        let args = [
            "chokepoint",
            "explain",
            "--policies",
            "p",
            "--from",
            "a/b",
            "--to",
            "192.0.2.1:80",
        ];
        let cli = Cli::try_parse_from(args.iter().chain(extra))?;
        match cli.command {
            Command::Explain(e) => Ok(e.default_action),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn default_action_takes_the_names_of_the_settings_file() {
        assert_eq!(default_action(&[]).unwrap(), DefaultAction::Allow);
        let deny = default_action(&["--default-action", "deny"]).unwrap();
        assert_eq!(deny, DefaultAction::Deny);
        let err = default_action(&["--default-action", "maybe"]).unwrap_err();
        assert!(
            err.to_string().contains("[possible values: allow, deny]"),
            "{err}"
        );
    }
}
