//! `explain --to svc/NAMESPACE/NAME:PORT[/proto]` and `--to CLUSTERIP:PORT[/proto]`.
//!
//! A connection to a Service is decided on the backend the node translates it to, so the
//! answer is the verdict for every ready backend of that Service port: identical verdicts in
//! one line, differing ones grouped with their backends.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;

use chokepoint_config::model::Protocol;
use serde_json::{Value, json};

use super::{Output, decided_by_json, endpoint_json, endpoint_text, split_protocol, verdict_text};
use crate::cli::Error;
use crate::policy::{Flow, ServicePortView, ServiceRef, Snapshot, Verdict};

/// The Service ports `to` names: `Some` for `svc/…` and for a ClusterIP:port the inventory
/// knows, `None` for any other destination (decided as one connection).
pub(super) fn target(snapshot: &Snapshot, to: &str) -> Result<Option<Vec<ServiceRef>>, Error> {
    let Some(spec) = to.strip_prefix("svc/") else {
        return Ok(cluster_ip(snapshot, to).map(|r| vec![r]));
    };
    let bad = || {
        Error::Argument(format!(
            "`{to}`: expected svc/NAMESPACE/NAME:PORT[/tcp|udp|sctp] (PORT: the Service port's number or name)"
        ))
    };
    let (spec, protocol) = split_protocol(spec);
    let (service, port) = spec.rsplit_once(':').ok_or_else(bad)?;
    let (namespace, name) = service.split_once('/').ok_or_else(bad)?;
    if port.is_empty() || namespace.is_empty() || name.is_empty() {
        return Err(bad());
    }
    let Some(info) = snapshot.service_info(namespace, name) else {
        return Err(Error::Argument(format!(
            "Service {namespace}/{name} is not in the inventory (add `kubectl get svc,endpointslices -A -o yaml` to --inventory)"
        )));
    };
    let mut refs = snapshot.service_ports(namespace, name, port);
    match protocol {
        Some(p) => refs.retain(|&r| snapshot.service(r).protocol == p),
        // A number without protocol means TCP, as elsewhere, when the Service has it on TCP.
        None if port.parse::<u16>().is_ok()
            && refs
                .iter()
                .any(|&r| snapshot.service(r).protocol == Protocol::Tcp) =>
        {
            refs.retain(|&r| snapshot.service(r).protocol == Protocol::Tcp)
        }
        None => {}
    }
    if refs.is_empty() {
        let ports: Vec<String> = info
            .ports
            .iter()
            .map(|p| match &p.name {
                Some(n) => format!("{n} {}/{}", p.port, p.protocol),
                None => format!("{}/{}", p.port, p.protocol),
            })
            .collect();
        let asked = protocol.map_or(String::new(), |p| format!("/{p}"));
        return Err(Error::Argument(format!(
            "Service {namespace}/{name} has no port `{port}{asked}`; its ports: {}",
            if ports.is_empty() {
                "none".to_owned()
            } else {
                ports.join(", ")
            }
        )));
    }
    Ok(Some(refs))
}

/// `IP:PORT[/proto]` when the IP is a ClusterIP of that Service port.
fn cluster_ip(snapshot: &Snapshot, to: &str) -> Option<ServiceRef> {
    let (rest, protocol) = split_protocol(to);
    let (host, port) = rest.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let ip: IpAddr = host.parse().ok()?;
    snapshot.service_at(ip, port.parse().ok()?, protocol.unwrap_or(Protocol::Tcp))
}

/// One ready backend and its verdict.
struct Backend {
    addr: SocketAddr,
    cluster_ip: Option<IpAddr>,
    verdict: Verdict,
}

pub(super) fn run(
    snapshot: &Snapshot,
    src: IpAddr,
    refs: &[ServiceRef],
    names: &[&str],
    output: Output,
) -> Result<ExitCode, Error> {
    let view = snapshot.service(refs[0]);
    let mut backends = Vec::new();
    for &r in refs {
        let port = snapshot.service(r);
        let addressed = port.cluster_ip.map(|ip| SocketAddr::new(ip, port.port));
        for &addr in snapshot.ready_backends(r) {
            let flow = Flow::to(src, addr, port.protocol, names).addressed(addressed);
            backends.push(Backend {
                addr,
                cluster_ip: port.cluster_ip,
                verdict: snapshot.evaluate(&flow),
            });
        }
    }
    let cluster_ips: Vec<IpAddr> = refs
        .iter()
        .filter_map(|&r| snapshot.service(r).cluster_ip)
        .collect();
    let mut out = std::io::stdout().lock();
    match output {
        Output::Json => {
            let v = to_json(snapshot, src, &view, &cluster_ips, &backends);
            serde_json::to_writer_pretty(&mut out, &v).map_err(std::io::Error::from)?;
            writeln!(out)?;
        }
        Output::Table => write_table(&mut out, snapshot, src, &view, &cluster_ips, &backends)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn to_json(
    snapshot: &Snapshot,
    src: IpAddr,
    view: &ServicePortView<'_>,
    cluster_ips: &[IpAddr],
    backends: &[Backend],
) -> Value {
    let backends: Vec<Value> = backends
        .iter()
        .map(|b| {
            let pod = snapshot.pod_by_ip(b.addr.ip()).map(|p| snapshot.pod(p));
            json!({
                "namespace": pod.map(|p| p.namespace.clone()),
                "pod": pod.map(|p| p.name.clone()),
                "ip": b.addr.ip().to_string(),
                "port": b.addr.port(),
                "cluster_ip": b.cluster_ip.map(|ip| ip.to_string()),
                "verdict": b.verdict.decision.to_string(),
                "reason": b.verdict.reason.as_str(),
                "decided_by": decided_by_json(snapshot, &b.verdict),
            })
        })
        .collect();
    json!({
        "service": {
            "namespace": view.namespace,
            "name": view.name,
            "port": view.port,
            "port_name": view.port_name,
            "protocol": view.protocol.to_string(),
            "cluster_ips": cluster_ips.iter().map(IpAddr::to_string).collect::<Vec<_>>(),
        },
        "source": endpoint_json(snapshot, src),
        "backends": backends,
    })
}

fn write_table(
    out: &mut impl Write,
    snapshot: &Snapshot,
    src: IpAddr,
    view: &ServicePortView<'_>,
    cluster_ips: &[IpAddr],
    backends: &[Backend],
) -> std::io::Result<()> {
    writeln!(out, "from   {}", endpoint_text(snapshot, src))?;
    let port_name = view.port_name.map_or(String::new(), |n| format!(" ({n})"));
    let at = if cluster_ips.is_empty() {
        "headless".to_owned()
    } else {
        let ips: Vec<String> = cluster_ips.iter().map(IpAddr::to_string).collect();
        format!("ClusterIP {}", ips.join(", "))
    };
    writeln!(
        out,
        "to     Service {}/{} port {}/{}{port_name}, {at}",
        view.namespace, view.name, view.port, view.protocol
    )?;
    writeln!(out)?;
    if backends.is_empty() {
        return writeln!(
            out,
            "no ready endpoint: a connection to this Service port reaches no pod (there is no backend to decide on)"
        );
    }
    // Grouped by verdict, in the order the verdicts first appear.
    let mut groups: Vec<(Verdict, Vec<&Backend>)> = Vec::new();
    for b in backends {
        match groups.iter_mut().find(|(v, _)| *v == b.verdict) {
            Some((_, list)) => list.push(b),
            None => groups.push((b.verdict, vec![b])),
        }
    }
    let n = backends.len();
    let plural = if n == 1 { "" } else { "s" };
    if let [(verdict, _)] = groups.as_slice() {
        return writeln!(
            out,
            "verdict for all {n} ready backend{plural}: {}",
            verdict_text(snapshot, verdict)
        );
    }
    for (verdict, list) in &groups {
        writeln!(
            out,
            "{} of {n} ready backends: {}",
            list.len(),
            verdict_text(snapshot, verdict)
        )?;
        for b in list {
            writeln!(out, "  {}", backend_text(snapshot, b.addr))?;
        }
    }
    Ok(())
}

/// `ns/pod (ip:port)` or the address alone.
fn backend_text(snapshot: &Snapshot, addr: SocketAddr) -> String {
    match snapshot.pod_by_ip(addr.ip()) {
        Some(p) => {
            let pod = snapshot.pod(p);
            format!("{}/{} ({addr})", pod.namespace, pod.name)
        }
        None => addr.to_string(),
    }
}
