//! `chokepoint-demo` (`make demo`): the whole product in a throwaway lab.
//!
//! A binary of its own, next to `chokepoint` in the same target directory, so that the product
//! binary carries no lab code. It runs that `chokepoint` binary as the gateway and uses the
//! gateway's library only to print what the policy engine expects.
//!
//! Builds network namespaces (a node, pods in three namespaces, outside hosts on
//! documentation addresses, a DNS server), runs the real gateway in the node with the real
//! capture rules and the policies of `deploy/examples/deny-internet-never-192-168` plus
//! tenant-a's DeveloperNetworkPolicies of `deploy/examples/developer-allowlist` (embedded in
//! the binary), sends real traffic, and prints the verdict matrices — what the policy engine
//! expects next to what the traffic did — and the audit records. The FQDN part uses real DNS
//! (dnsmasq as the upstream, the pods' lookups captured by the gateway's DNS proxy) and real
//! HTTPS (`curl` against servers with a self-signed certificate), domain fronting included.
//! The node translates a Service's ClusterIP the way kube-proxy's nftables mode does
//! ([`chokepoint_lab::kube_proxy`]): a pod connecting to the Service is decided on the backend
//! pod it reaches, and a denial's audit record names the Service.
//! Everything is removed at the end, also on failure; on Ctrl-C the gateway removes its rules
//! and the lab's guardian its namespaces.
//! A second section ([`metadata`]) shows metadata-server protection in a lab of its own, a
//! third ([`rollout`]) the safe rollout of a default deny: flow log, staged policy,
//! `chokepoint recommend`, enforcement.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use chokepoint_config::model::Protocol;
use chokepoint_config::{UnknownFields, load_str};

use chokepoint::policy::{Flow, Options, Snapshot, Verdict};
use chokepoint_lab::kube_proxy::{LabServices, ServiceProxy, ServiceSpec};
use chokepoint_lab::run::{Gateway, GatewayFiles, tcp_connect, tcp_server, udp_send, udp_server};
use chokepoint_lab::{HOST_B_IPV4, HOST_C_IPV4, HostSpec, Lab, PodSpec, Topology};

mod fqdn;
mod metadata;
mod rollout;

/// The embedded example: (file name, text).
const POLICIES: [(&str, &str); 4] = [
    (
        "admin-network-policy.yaml",
        include_str!("../../deploy/examples/deny-internet-never-192-168/admin-network-policy.yaml"),
    ),
    (
        "cluster-network-policy.yaml",
        include_str!(
            "../../deploy/examples/deny-internet-never-192-168/cluster-network-policy.yaml"
        ),
    ),
    (
        "tenant-b-network-policy.yaml",
        include_str!(
            "../../deploy/examples/deny-internet-never-192-168/tenant-b-network-policy.yaml"
        ),
    ),
    (
        "tenant-a-developer-network-policies.yaml",
        include_str!(
            "../../deploy/examples/developer-allowlist/tenant-a-developer-network-policies.yaml"
        ),
    ),
];
const STORY: &str = "deploy/examples/deny-internet-never-192-168: no internet by default, \
developers open sites with NetworkPolicies, 192.168.0.0/16 never; tenant-a declares its sites \
by DNS name (deploy/examples/developer-allowlist)";

/// The lab's DNS: the address pods send queries to (nothing owns it; the gateway captures
/// it), and the upstream server behind the gateway's DNS proxy.
const CLUSTER_DNS: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const UPSTREAM_DNS: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 53);
/// The sites tenant-a declares, served by lab hosts under their real names (answered by the
/// lab's own DNS server; nothing leaves the lab).
const PAYMENTS_IPV4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const DOWNLOADS_IPV4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const SITES: [(&str, Ipv4Addr); 2] = [
    ("api.stripe.com", PAYMENTS_IPV4),
    ("objects.githubusercontent.com", DOWNLOADS_IPV4),
];

/// The ClusterIP of the Service `sensitive/db` (port `postgres` 5432 → the db pod's 5432),
/// translated by the lab's kube-proxy emulation.
const DB_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 20);

/// An office host on a private range: the address the story keeps closed. It exists only
/// inside the lab's own namespace.
const OFFICE_IPV4: Ipv4Addr = Ipv4Addr::new(192, 168, 10, 5);

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
enum Error {
    #[error(
        "chokepoint-demo builds network namespaces and nftables rules and needs root: run it as root (e.g. `sudo make demo`)"
    )]
    NotRoot,
    #[error(
        "the gateway binary {0} is missing: build it with `cargo build --release -p chokepoint -p chokepoint-demo` (`make demo` does)"
    )]
    NoGateway(PathBuf),
    #[error("the lab could not be built: {0}")]
    Lab(#[from] chokepoint_lab::Error),
    #[error("the embedded policies are invalid:\n{0}")]
    Policies(chokepoint_config::Diagnostics),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

struct Case {
    from: (&'static str, &'static str),
    to: Target,
    port: u16,
    protocol: Protocol,
}

#[derive(Clone, Copy)]
enum Target {
    Host(&'static str, Ipv4Addr),
    Pod(&'static str, &'static str),
    /// The Service `namespace/name` at its ClusterIP; decided on its backend.
    Service(&'static str, &'static str, Ipv4Addr),
}

fn main() -> ExitCode {
    let worked = gateway_binary().and_then(|binary| run(&binary));
    match worked {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("chokepoint-demo: {:#}", anyhow::Error::from(e));
            ExitCode::FAILURE
        }
    }
}

/// The `chokepoint` binary built with this one: `chokepoint` in the same directory.
fn gateway_binary() -> Result<PathBuf, Error> {
    let binary = std::env::current_exe()?.with_file_name("chokepoint");
    if binary.is_file() {
        Ok(binary)
    } else {
        Err(Error::NoGateway(binary))
    }
}

/// Runs the demo; `Ok(true)` when every observation matched the expectation.
fn run(binary: &Path) -> Result<bool, Error> {
    if !nix::unistd::geteuid().is_root() {
        return Err(Error::NotRoot);
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "Chokepoint demo: {STORY}")?;
    let lab = Topology::new()
        .node_name("demo-node")
        .namespace("tenant-a", [("tenant", "a")])
        .namespace("tenant-b", [("tenant", "b")])
        .namespace("sensitive", [("security", "restricted")])
        .pod(PodSpec::new("tenant-a", "web").label("app", "web"))
        .pod(PodSpec::new("tenant-a", "api").label("app", "api"))
        .pod(PodSpec::new("tenant-b", "web").label("app", "web"))
        .pod(PodSpec::new("sensitive", "db").label("app", "db").port(
            Some("postgres"),
            5432,
            Protocol::Tcp,
        ))
        .host(HostSpec::new("partner", HOST_C_IPV4))
        .host(HostSpec::new("internet", HOST_B_IPV4))
        .host(HostSpec::new("office", OFFICE_IPV4))
        .host(HostSpec::new("dns", UPSTREAM_DNS))
        .host(HostSpec::new("payments", PAYMENTS_IPV4))
        .host(HostSpec::new("downloads", DOWNLOADS_IPV4))
        .build()?;
    writeln!(
        out,
        "lab {}: node {} ({}), {} pods, outside hosts partner {HOST_C_IPV4}, internet {HOST_B_IPV4}, office {OFFICE_IPV4}",
        lab.prefix(),
        lab.node().name,
        lab.node_netns(),
        lab.pods().len()
    )?;

    let files = GatewayFiles::new(
        &lab,
        &POLICIES,
        "tproxy",
        &format!("dns:\n  upstream: {UPSTREAM_DNS}\n"),
    );
    let services = LabServices::new(&lab, [db_service()]);
    services.install(&lab, ServiceProxy::Nftables)?;
    files.append_inventory(&services.inventory_yaml());
    writeln!(
        out,
        "Service sensitive/db at ClusterIP {DB_SERVICE_IP}:5432, translated by kube-proxy's nftables rules in the node"
    )?;
    let sites = fqdn::Sites::start(&lab, files.dir.path())?;
    let expected = expected_snapshot(&lab, &services)?;
    let gateway = Gateway::start(&lab, &files, binary);
    writeln!(
        out,
        "gateway running in {} with TPROXY capture of {}\n",
        lab.node_netns(),
        lab.pod_iface_pattern()
    )?;

    let cases = cases();
    let servers = start_servers(&lab, &cases);
    let mut matched = 0;
    writeln!(
        out,
        "{:<14} {:<54} {:<8} {:<48} {:<8}",
        "FROM", "TO", "EXPECTED", "DECIDED BY", "OBSERVED"
    )?;
    for case in &cases {
        let (src, dst) = addresses(&lab, case);
        // A Service is decided on the backend the node translates it to (its one pod here).
        let (decided_on, addressed) = match case.to {
            Target::Service(_, _, ip) => {
                let at = SocketAddr::new(IpAddr::V4(ip), case.port);
                (backend(&expected, at, case.protocol), Some(at))
            }
            _ => (SocketAddr::new(dst, case.port), None),
        };
        let verdict =
            expected.evaluate(&Flow::to(src, decided_on, case.protocol, &[]).addressed(addressed));
        let observed = observe(&lab, case, dst);
        let ok = observed.allowed == verdict.is_allowed();
        matched += usize::from(ok);
        writeln!(
            out,
            "{:<14} {:<54} {:<8} {:<48} {:<8} {}",
            format!("{}/{}", case.from.0, case.from.1),
            target_label(case, dst, decided_on),
            verdict.decision.to_string(),
            decided_by(&expected, &verdict),
            observed.label,
            if ok { "ok" } else { "MISMATCH" }
        )?;
    }
    let (fqdn_matched, fqdn_total) = fqdn::run(&mut out, &lab, &expected, &sites)?;
    let matched = matched + fqdn_matched;
    let total = cases.len() + fqdn_total;
    writeln!(out, "\n{matched}/{total} observed as expected.")?;

    for s in servers {
        s.stop();
    }
    drop(sites);
    // Stopping the gateway flushes the audit log, so the counts are final.
    let stopped = gateway.stop();
    let records = files.audit_lines();
    print_audit_and_clean_up(
        &mut out,
        "one JSON object per denied connection or flow",
        &records,
        lab,
        stopped,
    )?;
    let metadata_ok = metadata::run(&mut out, binary)?;
    let rollout_ok = rollout::run(&mut out, binary)?;
    Ok(matched == total && metadata_ok && rollout_ok)
}

/// Prints the audit records, tears the lab down and says what was cleaned up.
fn print_audit_and_clean_up(
    out: &mut impl Write,
    what: &str,
    records: &[String],
    lab: Lab,
    stopped: std::process::ExitStatus,
) -> Result<(), Error> {
    writeln!(out, "\nAudit log ({} records, {what}):", records.len())?;
    for r in records {
        writeln!(out, "{r}")?;
    }
    lab.teardown()?;
    writeln!(
        out,
        "\ncleaned up: gateway stopped ({stopped}), its capture rules removed, lab namespaces deleted"
    )?;
    Ok(())
}

fn cases() -> Vec<Case> {
    use Protocol::{Tcp, Udp};
    use Target::{Host, Pod, Service};
    let case = |from, to, port, protocol| Case {
        from,
        to,
        port,
        protocol,
    };
    vec![
        case(("tenant-b", "web"), Host("partner", HOST_C_IPV4), 443, Tcp),
        case(("tenant-a", "web"), Host("partner", HOST_C_IPV4), 443, Tcp),
        case(("tenant-b", "web"), Host("office", OFFICE_IPV4), 443, Tcp),
        case(("tenant-a", "web"), Host("office", OFFICE_IPV4), 443, Tcp),
        case(("tenant-b", "web"), Host("internet", HOST_B_IPV4), 443, Tcp),
        case(("tenant-a", "web"), Host("internet", HOST_B_IPV4), 53, Udp),
        case(("tenant-a", "web"), Pod("sensitive", "db"), 5432, Tcp),
        case(("sensitive", "db"), Pod("tenant-a", "web"), 8080, Udp),
        case(
            ("tenant-a", "web"),
            Service("sensitive", "db", DB_SERVICE_IP),
            5432,
            Tcp,
        ),
        case(
            ("tenant-b", "web"),
            Service("sensitive", "db", DB_SERVICE_IP),
            5432,
            Tcp,
        ),
    ]
}

fn db_service() -> ServiceSpec {
    ServiceSpec::new("sensitive", "db", DB_SERVICE_IP.into())
        .selector("app", "db")
        .port(Some("postgres"), 5432, Protocol::Tcp, 5432)
}

/// The one ready backend of the Service port at `at`.
fn backend(snapshot: &Snapshot, at: SocketAddr, protocol: Protocol) -> SocketAddr {
    let port = snapshot
        .service_at(at.ip(), at.port(), protocol)
        .expect("the demo's Service is in the inventory");
    snapshot.ready_backends(port)[0]
}

fn pod_ip(lab: &Lab, ns: &str, name: &str) -> IpAddr {
    IpAddr::V4(lab.pod(ns, name).expect("demo pod").ipv4)
}

fn addresses(lab: &Lab, case: &Case) -> (IpAddr, IpAddr) {
    let src = pod_ip(lab, case.from.0, case.from.1);
    let dst = match case.to {
        Target::Host(_, ip) | Target::Service(_, _, ip) => IpAddr::V4(ip),
        Target::Pod(ns, name) => pod_ip(lab, ns, name),
    };
    (src, dst)
}

/// `who ip:port/proto`; for a Service also the backend it was decided on.
fn target_label(case: &Case, dst: IpAddr, decided_on: SocketAddr) -> String {
    let who = match case.to {
        Target::Host(name, _) => name.to_owned(),
        Target::Pod(ns, name) => format!("{ns}/{name}"),
        Target::Service(ns, name, _) => {
            return format!("svc/{ns}/{name} {dst}:{} -> {decided_on}", case.port);
        }
    };
    format!("{who} {dst}:{}/{}", case.port, case.protocol)
}

fn decided_by(snapshot: &Snapshot, v: &Verdict) -> String {
    match v.decided_by.policy {
        Some(p) => format!("{} {}", v.decided_by.tier, snapshot.policy_label(p)),
        None => format!("{} ({})", v.decided_by.tier, v.reason.as_str()),
    }
}

/// The expectation: the policy engine itself, on the same policies and the lab's inventory.
fn expected_snapshot(lab: &Lab, services: &LabServices) -> Result<Snapshot, Error> {
    let mut text = lab.inventory_yaml();
    text.push('\n');
    text.push_str(&services.inventory_yaml());
    for (_, policy) in POLICIES {
        text.push_str("\n---\n");
        text.push_str(policy);
    }
    let loaded = load_str(Path::new("embedded"), &text, UnknownFields::Reject);
    if loaded.diagnostics.has_errors() {
        return Err(Error::Policies(loaded.diagnostics));
    }
    Ok(Snapshot::compile(&loaded.world, Options::default()))
}

enum Server {
    Tcp(chokepoint_lab::probe::ServerHandle<chokepoint_lab::probe::TcpServeReport>),
    Udp(chokepoint_lab::probe::ServerHandle<chokepoint_lab::probe::UdpServeReport>),
}

impl Server {
    fn stop(self) {
        let _ = match self {
            Server::Tcp(s) => s.stop().map(drop),
            Server::Udp(s) => s.stop().map(drop),
        };
    }
}

/// One server per (namespace, address, port, protocol) the cases talk to.
fn start_servers(lab: &Lab, cases: &[Case]) -> Vec<Server> {
    let mut seen = Vec::new();
    let mut servers = Vec::new();
    for case in cases {
        let (netns, ip) = match case.to {
            // Its backend, the db pod, is a case of its own.
            Target::Service(..) => continue,
            Target::Host(name, ip) => (
                lab.host(name).expect("demo host").netns.clone(),
                IpAddr::V4(ip),
            ),
            Target::Pod(ns, name) => (
                lab.pod(ns, name).expect("demo pod").netns.clone(),
                pod_ip(lab, ns, name),
            ),
        };
        let key = (ip, case.port, case.protocol);
        if seen.contains(&key) {
            continue;
        }
        seen.push(key);
        let addr = SocketAddr::new(ip, case.port);
        servers.push(match case.protocol {
            Protocol::Udp => Server::Udp(udp_server(&netns, addr)),
            _ => Server::Tcp(tcp_server(&netns, addr)),
        });
    }
    servers
}

struct Observation {
    allowed: bool,
    label: &'static str,
}

fn observe(lab: &Lab, case: &Case, dst: IpAddr) -> Observation {
    let netns = lab
        .pod(case.from.0, case.from.1)
        .expect("demo pod")
        .netns
        .clone();
    let to = SocketAddr::new(dst, case.port);
    match case.protocol {
        Protocol::Udp => {
            let r = udp_send(&netns, to, Duration::from_millis(800));
            Observation {
                allowed: r.answered,
                label: if r.answered { "allow" } else { "deny" },
            }
        }
        _ => {
            let r = tcp_connect(&netns, to, 4096, Duration::from_secs(3));
            let label = if r.echo_ok {
                "allow"
            } else if r.reset {
                "deny/RST"
            } else if r.timed_out {
                "timeout"
            } else {
                "failed"
            };
            Observation {
                allowed: r.echo_ok,
                label,
            }
        }
    }
}
