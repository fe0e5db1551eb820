//! The demo's FQDN part: tenant-a's pods look their declared sites up through the gateway
//! (real DNS: dnsmasq behind the gateway's DNS proxy) and fetch them over HTTPS with `curl`.
//! A pod the declaration does not select is refused, and so is a request that fronts one
//! declared name on another declared name's address (`not_resolved` in the audit log).
//!
//! The expectation comes from the engine and the name check, fed with what the pod's
//! namespace resolved.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Instant;

use chokepoint_config::model::Protocol;
use chokepoint_config::settings::{DefaultAction, Dns};
use chokepoint_dns::{Cache, CacheLimits, Metrics};

use super::{CLUSTER_DNS, Error, SITES, UPSTREAM_DNS, decided_by};
use crate::l7::peek::Shown;
use crate::lab::Lab;
use crate::lab::services::{Certificate, Dnsmasq, WebServer, Zone, curl, resolv_conf};
use crate::policy::{Flow, Snapshot};
use crate::proxy::names;

/// The DNS server and the sites, running in the lab.
pub(super) struct Sites {
    // Dropped before the lab goes.
    _web: Vec<WebServer>,
    _dnsmasq: Dnsmasq,
    cert: Certificate,
    resolv: PathBuf,
}

impl Sites {
    pub(super) fn start(lab: &Lab, dir: &Path) -> Result<Sites, Error> {
        let host_ns = |name: &str| lab.host(name).expect("demo host").netns.clone();
        let mut zone = Zone::new();
        for (name, ip) in SITES {
            zone = zone.host(name, &[ip.into()], 300);
        }
        let dnsmasq = Dnsmasq::start(&host_ns("dns"), UPSTREAM_DNS.into(), &zone, 300, dir)?;
        let names: Vec<&str> = SITES.iter().map(|(n, _)| *n).collect();
        let cert = Certificate::self_signed(&names, dir)?;
        let mut web = Vec::new();
        for (host, (name, ip)) in ["payments", "downloads"].into_iter().zip(SITES) {
            let addr = SocketAddr::new(ip.into(), 443);
            web.push(WebServer::start(&host_ns(host), addr, name, Some(&cert))?);
        }
        let resolv = resolv_conf(dir, CLUSTER_DNS.into())?;
        Ok(Sites {
            _web: web,
            _dnsmasq: dnsmasq,
            cert,
            resolv,
        })
    }
}

/// One HTTPS request by name; `via` sends it to another name's address (curl's
/// `--connect-to`, the shape of domain fronting).
struct Request {
    from: (&'static str, &'static str),
    name: &'static str,
    via: Option<&'static str>,
}

const REQUESTS: [Request; 4] = [
    Request {
        from: ("tenant-a", "web"),
        name: "api.stripe.com",
        via: None,
    },
    Request {
        from: ("tenant-a", "web"),
        name: "objects.githubusercontent.com",
        via: None,
    },
    Request {
        from: ("tenant-a", "api"),
        name: "api.stripe.com",
        via: None,
    },
    Request {
        from: ("tenant-a", "web"),
        name: "api.stripe.com",
        via: Some("objects.githubusercontent.com"),
    },
];

fn site_ip(name: &str) -> Ipv4Addr {
    SITES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, ip)| *ip)
        .expect("a demo site")
}

/// Prints the FQDN matrix; `(matched, total)`.
pub(super) fn run(
    out: &mut impl Write,
    lab: &Lab,
    expected: &Snapshot,
    sites: &Sites,
) -> Result<(usize, usize), Error> {
    writeln!(
        out,
        "\nFQDN allowlist: pods look names up through the gateway's DNS proxy (dnsmasq upstream) \
         and fetch them with curl over HTTPS; tenant-a's web pods declared api.stripe.com and \
         *.githubusercontent.com\n"
    )?;
    writeln!(
        out,
        "{:<14} {:<76} {:<20} {:<42} {:<8}",
        "FROM", "REQUEST", "EXPECTED", "DECIDED BY", "OBSERVED"
    )?;
    let mut matched = 0;
    for request in &REQUESTS {
        let (expected_label, expected_allowed, by) = expect(expected, lab, request);
        let (observed_label, observed_allowed) = observe(lab, sites, request);
        let ok = expected_allowed == observed_allowed;
        matched += usize::from(ok);
        let what = match request.via {
            Some(via) => format!("https://{}/ sent to {via} ({})", request.name, site_ip(via)),
            None => format!("https://{}/ ({})", request.name, site_ip(request.name)),
        };
        writeln!(
            out,
            "{:<14} {:<76} {:<20} {:<42} {:<8} {}",
            format!("{}/{}", request.from.0, request.from.1),
            what,
            expected_label,
            by,
            observed_label,
            if ok { "ok" } else { "MISMATCH" }
        )?;
    }
    Ok((matched, REQUESTS.len()))
}

/// What the engine and the name check say, given what the pod's namespace resolved (curl
/// looks up the request's name and, with `via`, the other one).
fn expect(snapshot: &Snapshot, lab: &Lab, request: &Request) -> (String, bool, String) {
    let (namespace, pod) = request.from;
    let src = IpAddr::V4(lab.pod(namespace, pod).expect("demo pod").ipv4);
    let target = request.via.unwrap_or(request.name);
    let dst = IpAddr::V4(site_ip(target));
    let cache = Cache::new(
        CacheLimits::from_settings(&crate::app::dns_settings(&Dns::default())),
        &Metrics::default(),
    );
    let now = Instant::now();
    for name in [Some(request.name), request.via].into_iter().flatten() {
        cache.insert(namespace, name, &[site_ip(name).into()], 300, now);
    }
    let known = names::lookup(Some(&cache), snapshot, src, dst, false);
    let known = names::as_strs(&known);
    let flow = Flow {
        src,
        dst,
        protocol: Protocol::Tcp,
        port: 443,
        names: &known,
        addressed: None,
    };
    let verdict = snapshot.evaluate(&flow);
    let by = decided_by(snapshot, &verdict);
    if !verdict.is_allowed() {
        return ("deny".into(), false, by);
    }
    if verdict.by_domain_names {
        let shown = Shown::Sni(request.name.to_owned());
        let result = names::check(snapshot, &cache, &flow, &shown, DefaultAction::Allow);
        if let Some(reason) = names::denial(result) {
            return (format!("deny ({reason})"), false, by);
        }
    }
    ("allow".into(), true, by)
}

fn observe(lab: &Lab, sites: &Sites, request: &Request) -> (String, bool) {
    let netns = &lab
        .pod(request.from.0, request.from.1)
        .expect("demo pod")
        .netns;
    let cacert = sites.cert.cert.display().to_string();
    let url = format!("https://{}/", request.name);
    let connect_to = request
        .via
        .map(|via| format!("{}:443:{via}:443", request.name));
    let mut args = vec!["--cacert", cacert.as_str()];
    if let Some(c) = &connect_to {
        args.extend(["--connect-to", c.as_str()]);
    }
    args.push(&url);
    let r = curl(netns, &sites.resolv, &args);
    match (r.exit, r.status) {
        (0, 200) => ("allow".into(), true),
        // Reset: during the handshake (35), while receiving (56), or refused (7).
        (7 | 35 | 56, _) => ("deny/RST".into(), false),
        (exit, _) => (format!("failed (curl exit {exit})"), false),
    }
}
