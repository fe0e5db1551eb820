//! `chokepoint status`: a running gateway's `/policies`, for a person (a table) or a script
//! (the JSON as served, filtered to one policy with `--policy`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use super::Error;
use super::explain::Output;
use crate::audit::Timestamp;
use crate::policy::{InvalidOutcome, Mode, PolicyStatus, Report};

/// How long a gateway's admin endpoint may take to answer.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Bigger than any report of a node's policies; a longer answer is not the admin endpoint.
const MAX_RESPONSE: u64 = 256 << 20;

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The gateway's admin address (`listen.admin` of its settings), as `host:port`.
    #[arg(long)]
    pub admin: String,
    /// Only this policy: `cnp/NAME`, `anp/NAME`, `banp/NAME`, `dnp/NAMESPACE/NAME`,
    /// `np/NAMESPACE/NAME`, or the kind spelled out (`ClusterNetworkPolicy/NAME`).
    #[arg(long)]
    pub policy: Option<String>,
    #[arg(long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

pub fn run(args: &StatusArgs) -> Result<ExitCode, Error> {
    let mut report = fetch(&args.admin)?;
    if let Some(wanted) = &args.policy {
        let wanted = PolicyName::parse(wanted)?;
        report.policies.retain(|p| wanted.names(p));
        report
            .invalid
            .retain(|i| i.object.as_deref().is_some_and(|o| wanted.is_object(o)));
        if report.policies.is_empty() && report.invalid.is_empty() {
            return Err(Error::Argument(format!(
                "no policy {} is loaded in the gateway at {} (generation {}); \
                 `chokepoint status --admin {}` lists them",
                wanted.text, args.admin, report.generation, args.admin
            )));
        }
    }
    let mut out = std::io::stdout().lock();
    match args.output {
        Output::Json => {
            serde_json::to_writer_pretty(&mut out, &report).map_err(std::io::Error::other)?;
            writeln!(out)?;
        }
        Output::Table => out.write_all(table(&report).as_bytes())?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `GET /policies` over HTTP/1.1 on a connection of its own.
fn fetch(admin: &str) -> Result<Report, Error> {
    let unreachable = |source| Error::Admin {
        admin: admin.to_owned(),
        source,
    };
    let addrs: Vec<SocketAddr> = admin
        .to_socket_addrs()
        .map_err(|e| {
            Error::Argument(format!(
                "--admin {admin}: {e}; give the gateway's listen.admin address as host:port, \
                 e.g. 127.0.0.1:9901"
            ))
        })?
        .collect();
    let mut last = None;
    let mut stream = None;
    for a in &addrs {
        match TcpStream::connect_timeout(a, TIMEOUT) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let mut stream = stream
        .ok_or_else(|| unreachable(last.unwrap_or_else(|| std::io::Error::other("no address"))))?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .map_err(unreachable)?;
    stream
        .set_write_timeout(Some(TIMEOUT))
        .map_err(unreachable)?;
    write!(
        stream,
        "GET /policies HTTP/1.1\r\nHost: {admin}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    )
    .map_err(unreachable)?;
    let mut response = Vec::new();
    stream
        .take(MAX_RESPONSE)
        .read_to_end(&mut response)
        .map_err(unreachable)?;
    let body = body(&response).map_err(|what| Error::AdminResponse {
        admin: admin.to_owned(),
        what,
    })?;
    serde_json::from_slice(body).map_err(|e| Error::AdminResponse {
        admin: admin.to_owned(),
        what: format!("the /policies answer is not a policy report: {e}"),
    })
}

/// The body of a complete `200` response read to the end of the connection.
fn body(response: &[u8]) -> Result<&[u8], String> {
    let end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the answer is not HTTP (no end of headers)")?;
    let head = String::from_utf8_lossy(&response[..end]);
    let status = head.lines().next().unwrap_or_default();
    if status.split(' ').nth(1) != Some("200") {
        return Err(format!(
            "GET /policies answered `{status}` (a gateway older than `status`, or not a gateway's admin address)"
        ));
    }
    Ok(&response[end + 4..])
}

/// What `--policy` names.
struct PolicyName {
    text: String,
    /// The short kind (`cnp`, `dnp`, …).
    kind: &'static str,
    namespace: Option<String>,
    name: String,
}

const KINDS: [(&str, &str, bool); 5] = [
    ("cnp", "ClusterNetworkPolicy", false),
    ("anp", "AdminNetworkPolicy", false),
    ("banp", "BaselineAdminNetworkPolicy", false),
    ("dnp", "DeveloperNetworkPolicy", true),
    ("np", "NetworkPolicy", true),
];

impl PolicyName {
    fn parse(text: &str) -> Result<PolicyName, Error> {
        let bad = |what: &str| {
            Error::Argument(format!(
                "--policy {text}: {what}; write KIND/NAME for cluster policies (cnp/NAME, \
                 anp/NAME, banp/NAME) and KIND/NAMESPACE/NAME for dnp and np"
            ))
        };
        let parts: Vec<&str> = text.split('/').collect();
        let kind = parts[0];
        let Some(&(short, _, namespaced)) = KINDS
            .iter()
            .find(|(s, k, _)| kind.eq_ignore_ascii_case(s) || kind.eq_ignore_ascii_case(k))
        else {
            return Err(bad(&format!("`{kind}` is not a policy kind")));
        };
        let (namespace, name) = match (namespaced, &parts[1..]) {
            (false, [name]) => (None, *name),
            (true, [namespace, name]) => (Some((*namespace).to_owned()), *name),
            (false, _) => return Err(bad("a cluster policy has a name and no namespace")),
            (true, _) => return Err(bad("this kind needs a namespace and a name")),
        };
        if name.is_empty() || namespace.as_deref() == Some("") {
            return Err(bad("the name (and namespace) must not be empty"));
        }
        Ok(PolicyName {
            text: text.to_owned(),
            kind: short,
            namespace,
            name: name.to_owned(),
        })
    }

    fn label(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{}/{ns}/{}", self.kind, self.name),
            None => format!("{}/{}", self.kind, self.name),
        }
    }

    /// Whether a loaded policy is this one (staged or enforced).
    fn names(&self, p: &PolicyStatus) -> bool {
        p.policy == self.label()
    }

    /// Whether an error's object (`Kind/name`, `Kind/namespace/name`) is this policy.
    fn is_object(&self, object: &str) -> bool {
        let long = KINDS
            .iter()
            .find(|(s, ..)| *s == self.kind)
            .map_or("", |(_, k, _)| k);
        let expected = match &self.namespace {
            Some(ns) => format!("{long}/{ns}/{}", self.name),
            None => format!("{long}/{}", self.name),
        };
        object.eq_ignore_ascii_case(&expected)
    }
}

/// How long ago `t` was, in the largest whole unit.
fn ago(now: Timestamp, t: Timestamp) -> String {
    let s = (now.unix_millis() - t.unix_millis()).max(0) / 1000;
    match s {
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..86_400 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86_400),
    }
}

/// The report for a person: one block per policy with its rules, then what is invalid.
fn table(report: &Report) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let when = |t: Option<Timestamp>| {
        t.map_or("never".to_owned(), |t| {
            format!("{t} ({})", ago(report.now, t))
        })
    };
    let _ = writeln!(
        out,
        "snapshot generation {}, loaded {}",
        report.generation,
        when(report.loaded_at)
    );
    for p in &report.policies {
        let priority = p
            .priority
            .map_or(String::new(), |n| format!(" priority {n}"));
        let mode = match p.mode {
            Mode::Enforced => "enforced",
            Mode::Staged => "STAGED (counted, not enforced)",
        };
        let _ = writeln!(out, "\n{}  {} tier{priority}, {mode}", p.policy, p.tier);
        let _ = writeln!(
            out,
            "  this version since generation {}, loaded {}",
            p.generation,
            when(p.loaded_at)
        );
        match p.selects.len() {
            0 => {
                let _ = writeln!(out, "  selects no pod on this node");
            }
            n => {
                let _ = writeln!(out, "  selects {n} pod(s) here: {}", p.selects.join(", "));
            }
        }
        if let Some(h) = &p.isolation_denied {
            let _ = writeln!(
                out,
                "  denied for isolation (no rule of an isolating policy allowed): {}, last {}",
                h.flows,
                when(h.last_hit)
            );
        }
        if p.rules.is_empty() {
            let _ = writeln!(out, "  no egress rules");
            continue;
        }
        let rows: Vec<[String; 7]> = p
            .rules
            .iter()
            .map(|r| {
                [
                    r.index.to_string(),
                    r.name.clone().unwrap_or_else(|| "-".to_owned()),
                    r.action.clone(),
                    r.allowed.to_string(),
                    r.denied.to_string(),
                    r.passed.to_string(),
                    r.last_hit
                        .map_or("never".to_owned(), |t| ago(report.now, t)),
                ]
            })
            .collect();
        let header = [
            "RULE", "NAME", "ACTION", "ALLOWED", "DENIED", "PASSED", "LAST HIT",
        ];
        let widths: Vec<usize> = (0..header.len())
            .map(|c| {
                rows.iter()
                    .map(|r| r[c].len())
                    .chain([header[c].len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut line = |cells: &[&str]| {
            let mut l = String::from("  ");
            for (c, cell) in cells.iter().enumerate() {
                let _ = write!(l, "{cell:<w$}  ", w = widths[c]);
            }
            let _ = writeln!(out, "{}", l.trim_end());
        };
        line(&header);
        for r in &rows {
            line(&r.iter().map(String::as_str).collect::<Vec<_>>());
        }
    }
    if !report.invalid.is_empty() {
        let _ = writeln!(out, "\nnot in force, invalid:");
        for i in &report.invalid {
            let what = match i.outcome {
                InvalidOutcome::ReloadRefused => "reload refused, the previous snapshot stays",
                InvalidOutcome::Skipped => "skipped, the other policies apply",
            };
            let _ = writeln!(
                out,
                "  {} ({what}; since {})",
                i.error,
                ago(report.now, i.since)
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_names_are_parsed_by_short_or_long_kind_with_namespace_where_needed() {
        let p = PolicyName::parse("ClusterNetworkPolicy/deny-all").unwrap();
        assert_eq!(p.label(), "cnp/deny-all");
        assert!(p.is_object("ClusterNetworkPolicy/deny-all"));
        let p = PolicyName::parse("np/team-a/egress").unwrap();
        assert_eq!(p.label(), "np/team-a/egress");
        for bad in ["cnp/a/b", "dnp/only-name", "pod/x", "np//x", "cnp/"] {
            let e = PolicyName::parse(bad).err().map(|e| e.to_string());
            assert!(
                e.as_deref()
                    .is_some_and(|e| e.contains(bad) && e.contains("KIND/")),
                "{bad}: {e:?}"
            );
        }
    }

    #[test]
    fn a_response_other_than_200_is_refused_with_its_status() {
        let e = body(b"HTTP/1.1 404 Not Found\r\ncontent-length: 3\r\n\r\nno\n").unwrap_err();
        assert!(e.contains("404 Not Found"), "{e}");
        assert_eq!(
            body(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}").unwrap(),
            b"{}"
        );
        assert!(body(b"garbage").is_err());
    }
}
