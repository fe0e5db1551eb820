//! Services end to end: the real gateway in the lab, with the node translating ClusterIPs the
//! way kube-proxy does (real nftables DNAT in the node namespace: `chokepoint_lab::kube_proxy`),
//! or holding them as local addresses the way kube-proxy's IPVS mode does.
//!
//! Policy is decided on the backend pod a connection reaches; the audit record names the
//! Service the pod addressed.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use chokepoint_config::model::Protocol;
use chokepoint_lab::kube_proxy::{LabServices, ServiceProxy, ServiceSpec};
use chokepoint_lab::probe::{ServerHandle, TcpServeReport, UdpServeReport};
use chokepoint_lab::services::{Dnsmasq, Zone, dig};
use chokepoint_lab::{HOST_A_IPV4, HostSpec, Lab, PodSpec, Topology};
use chokepoint_tests::{
    GatewayFiles, HeldConnection, require_root, start_gateway, tcp_connect, tcp_server, teardown,
    udp_send, udp_server,
};
use serde_json::Value;

const DB_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 20);
const DB_IPV6: &str = "fd00:96::20";
const DB_PORT: u16 = 5432;
const DB_UDP_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 21);
const EMPTY_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 30);
const EMPTY_IPV6: &str = "fd00:96::30";
const VAULT_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 40);
const KUBE_DNS_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
/// The backends' port (the Services' targetPort).
const TARGET: u16 = 8080;
/// The site a name rule opens: raw TCP, so not one of `fqdn.httpPorts`.
const SITE_PORT: u16 = 7000;
/// The lab's DNS server, kube-dns's endpoint.
const DNS_HOST: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 53);

/// tenant-a's web may reach db's pods, nothing else (egress isolation); the Admin tier keeps
/// every pod away from the sensitive namespaces.
const POLICIES: &str = "\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {namespace: tenant-a, name: web-to-db}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Egress]
  egress:
  - to:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: db}}
      podSelector: {matchLabels: {app: db}}
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: protect-sensitive}
spec:
  tier: Admin
  priority: 10
  subject: {namespaces: {}}
  egress:
  - name: no-sensitive
    action: Deny
    to: [{pods: {namespaceSelector: {matchLabels: {sensitive: 'true'}}, podSelector: {}}}]
";

struct Setup {
    tcp: Vec<ServerHandle<TcpServeReport>>,
    udp: Vec<ServerHandle<UdpServeReport>>,
    files: GatewayFiles,
    lab: Lab,
}

fn services(ipv6: bool) -> Vec<ServiceSpec> {
    let mut db = ServiceSpec::new("db", "db", DB_IP.into())
        .selector("app", "db")
        .port(Some("pg"), DB_PORT, Protocol::Tcp, TARGET);
    if ipv6 {
        db = db.cluster_ip(DB_IPV6.parse().unwrap());
    }
    let mut empty = ServiceSpec::new("db", "empty", EMPTY_IP.into())
        .selector("app", "nothing")
        .port(Some("http"), 80, Protocol::Tcp, TARGET)
        .port(Some("echo"), 9000, Protocol::Udp, TARGET);
    if ipv6 {
        empty = empty.cluster_ip(EMPTY_IPV6.parse().unwrap());
    }
    vec![
        db,
        ServiceSpec::new("db", "db-udp", DB_UDP_IP.into())
            .selector("app", "db")
            .port(Some("echo"), 9000, Protocol::Udp, TARGET),
        empty,
        ServiceSpec::new("vault", "vault", VAULT_IP.into())
            .selector("app", "vault")
            .port(Some("api"), 8200, Protocol::Tcp, TARGET),
    ]
}

impl Setup {
    /// A node whose ClusterIPs `proxy` treats, the gateway capturing in `mode` with `extra`
    /// settings, servers on every backend pod.
    fn new(proxy: ServiceProxy, mode: &str, ipv6: bool, extra: &str) -> Setup {
        require_root();
        let lab = Topology::new()
            .ipv6(ipv6)
            .namespace("tenant-a", [("tenant", "a")])
            .namespace("vault", [("sensitive", "true")])
            .pod(PodSpec::new("tenant-a", "web").label("app", "web"))
            .pod(PodSpec::new("db", "db-0").label("app", "db"))
            .pod(PodSpec::new("vault", "vault-0").label("app", "vault"))
            .host(HostSpec::new("site-a", HOST_A_IPV4))
            .build()
            .expect("build lab");
        let svc = LabServices::new(&lab, services(ipv6));
        svc.install(&lab, proxy).expect("install the Services");
        let files = GatewayFiles::new(&lab, &[("policies.yaml", POLICIES)], mode, extra);
        files.append_inventory(&svc.inventory_yaml());
        let mut tcp = Vec::new();
        let mut udp = Vec::new();
        for (ns, name) in [("db", "db-0"), ("vault", "vault-0")] {
            let pod = lab.pod(ns, name).unwrap();
            for ip in pod.ips() {
                tcp.push(tcp_server(&pod.netns, SocketAddr::new(ip, TARGET)));
            }
            udp.push(udp_server(
                &pod.netns,
                SocketAddr::new(pod.ipv4.into(), TARGET),
            ));
        }
        Setup {
            tcp,
            udp,
            files,
            lab,
        }
    }

    fn web(&self) -> (String, IpAddr) {
        let pod = self.lab.pod("tenant-a", "web").unwrap();
        (pod.netns.clone(), pod.ips()[0])
    }

    fn connect(&self, to: SocketAddr) -> chokepoint_lab::probe::TcpConnectReport {
        tcp_connect(&self.web().0, to, 4096, Duration::from_secs(5))
    }

    fn finish(mut self) {
        for s in self.tcp.drain(..) {
            let _ = s.stop();
        }
        for s in self.udp.drain(..) {
            let _ = s.stop();
        }
        teardown(self.lab);
    }
}

fn sa(ip: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

/// The one audit record of a TCP connection to `cluster_ip`, waiting for it.
fn record_for(files: &GatewayFiles, cluster_ip: impl Into<IpAddr>) -> Value {
    protocol_record_for(files, cluster_ip, "tcp")
}

/// The one audit record of a `protocol` flow to `cluster_ip`, waiting for it.
fn protocol_record_for(
    files: &GatewayFiles,
    cluster_ip: impl Into<IpAddr>,
    protocol: &str,
) -> Value {
    let cluster_ip = cluster_ip.into();
    let found = |records: &[Value]| {
        records
            .iter()
            .filter(|r| r["destination"]["cluster_ip"] == cluster_ip.to_string())
            .filter(|r| r["destination"]["protocol"] == protocol)
            .cloned()
            .collect::<Vec<_>>()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mine = found(&files.audit_records());
        if !mine.is_empty() || std::time::Instant::now() > deadline {
            assert_eq!(mine.len(), 1, "{:#?}", files.audit_records());
            return mine[0].clone();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn assert_names_service(r: &Value, namespace: &str, name: &str, port: u16) {
    assert_eq!(r["destination"]["service"]["namespace"], namespace, "{r:#}");
    assert_eq!(r["destination"]["service"]["name"], name, "{r:#}");
    assert_eq!(r["destination"]["service"]["port"], port, "{r:#}");
}

/// Allowed through the db Service: the backend pod answers and sees the pod's own IP.
fn assert_db_reachable(s: &Setup, to: SocketAddr) {
    let report = s.connect(to);
    assert!(report.echo_ok, "{to}: {report:?}");
    let web = s.lab.pod("tenant-a", "web").unwrap();
    let want = if to.is_ipv6() {
        web.ipv6.map(IpAddr::V6)
    } else {
        Some(IpAddr::V4(web.ipv4))
    };
    assert_eq!(
        report.peer_seen.map(|p| p.ip()),
        want,
        "{to}: the backend sees the pod"
    );
}

#[test]
fn through_kube_proxy_nftables_a_network_policy_on_pods_allows_their_service_and_an_admin_deny_holds_on_the_cluster_ip()
 {
    let s = Setup::new(ServiceProxy::Nftables, "tproxy", true, "");
    let _gw = start_gateway(&s.lab, &s.files);

    // The NetworkPolicy names db's pods; the pod connects to their Service (both families).
    assert_db_reachable(&s, sa(DB_IP, DB_PORT));
    assert_db_reachable(&s, sa(DB_IPV6.parse::<IpAddr>().unwrap(), DB_PORT));

    // UDP through a Service: the answer comes back from the ClusterIP the pod wrote to.
    let udp = udp_send(&s.web().0, sa(DB_UDP_IP, 9000), Duration::from_secs(5));
    assert!(udp.answered, "{udp:?}");
    assert_eq!(udp.peer_seen.map(|p| p.ip()), Some(s.web().1));
    assert!(
        s.files.audit_records().is_empty(),
        "{:#?}",
        s.files.audit_records()
    );

    // The Admin Deny to the sensitive namespace holds when the pod goes through the Service,
    // and the record names both the backend and the Service.
    let denied = s.connect(sa(VAULT_IP, 8200));
    assert!(denied.reset && !denied.echo_ok, "{denied:?}");
    let r = record_for(&s.files, VAULT_IP);
    assert_eq!(r["decided_by"]["tier"], "Admin");
    assert_eq!(r["decided_by"]["policy"], "protect-sensitive");
    let vault = s.lab.pod("vault", "vault-0").unwrap();
    assert_eq!(r["destination"]["ip"], vault.ipv4.to_string());
    assert_eq!(r["destination"]["port"], TARGET);
    assert_names_service(&r, "vault", "vault", 8200);
    s.finish();
}

#[test]
fn through_kube_proxy_nftables_a_service_without_endpoints_is_reset_and_audited_not_left_to_time_out()
 {
    let s = Setup::new(ServiceProxy::Nftables, "tproxy", true, "");
    let _gw = start_gateway(&s.lab, &s.files);
    // kube-proxy's reject in the input chain would take the captured packet before the
    // gateway's socket, without an answer the pod could see (its ICMP error would come from
    // the ClusterIP). The capture hands the gateway these connections instead: refused with a
    // reset, as kube-proxy refuses them, and audited.
    for to in [
        sa(EMPTY_IP, 80),
        sa(EMPTY_IPV6.parse::<IpAddr>().unwrap(), 80),
    ] {
        let report = tcp_connect(&s.web().0, to, 16, Duration::from_secs(5));
        assert!(report.reset && !report.echo_ok, "{to}: {report:?}");
    }
    for ip in [IpAddr::V4(EMPTY_IP), EMPTY_IPV6.parse().unwrap()] {
        let r = record_for(&s.files, ip);
        assert_eq!(r["reason"], "no_endpoints", "{r:#}");
        assert_eq!(r["destination"]["ip"], ip.to_string(), "{r:#}");
        assert_eq!(r["destination"]["port"], 80, "{r:#}");
        assert_names_service(&r, "db", "empty", 80);
    }
    // UDP: dropped, audited.
    let udp = udp_send(&s.web().0, sa(EMPTY_IP, 9000), Duration::from_secs(2));
    assert!(!udp.answered, "{udp:?}");
    let r = protocol_record_for(&s.files, EMPTY_IP, "udp");
    assert_eq!(r["reason"], "no_endpoints", "{r:#}");
    assert_names_service(&r, "db", "empty", 9000);
    // Services with endpoints are untouched by it.
    assert_db_reachable(&s, sa(DB_IP, DB_PORT));
    s.finish();
}

#[test]
fn with_cluster_ips_local_to_the_node_like_ipvs_the_gateway_picks_a_ready_backend_itself() {
    let s = Setup::new(ServiceProxy::LocalVips, "tproxy", false, "");
    let _gw = start_gateway(&s.lab, &s.files);

    // Nothing translated the ClusterIP before the capture: the gateway picks db-0 from the
    // EndpointSlice, decides on it (the NetworkPolicy allows db pods) and connects there.
    assert_db_reachable(&s, sa(DB_IP, DB_PORT));
    let udp = udp_send(&s.web().0, sa(DB_UDP_IP, 9000), Duration::from_secs(5));
    assert!(udp.answered, "{udp:?}");

    // Decided on the backend: the Admin Deny to vault's pods holds on its ClusterIP.
    let denied = s.connect(sa(VAULT_IP, 8200));
    assert!(denied.reset, "{denied:?}");
    let r = record_for(&s.files, VAULT_IP);
    assert_eq!(r["decided_by"]["policy"], "protect-sensitive");
    assert_eq!(
        r["destination"]["ip"],
        s.lab.pod("vault", "vault-0").unwrap().ipv4.to_string()
    );
    assert_names_service(&r, "vault", "vault", 8200);

    // No ready endpoint: refused with a reset, the way kube-proxy refuses it, and audited
    // with a reason of its own.
    let empty = s.connect(sa(EMPTY_IP, 80));
    assert!(empty.reset && !empty.echo_ok, "{empty:?}");
    let r = record_for(&s.files, EMPTY_IP);
    assert_eq!(r["reason"], "no_endpoints");
    assert_eq!(r["destination"]["ip"], EMPTY_IP.to_string());
    assert_names_service(&r, "db", "empty", 80);
    s.finish();
}

#[test]
fn with_services_resolve_kernel_an_untranslated_cluster_ip_is_refused_not_decided_on() {
    let s = Setup::new(
        ServiceProxy::LocalVips,
        "tproxy",
        false,
        "services:\n  resolve: kernel\n",
    );
    let _gw = start_gateway(&s.lab, &s.files);
    let report = s.connect(sa(DB_IP, DB_PORT));
    assert!(report.reset && !report.echo_ok, "{report:?}");
    let r = record_for(&s.files, DB_IP);
    assert_eq!(r["reason"], "service_not_translated");
    assert_names_service(&r, "db", "db", DB_PORT);
    // A pod address is not a Service: decided and relayed as before.
    let db0 = s.lab.pod("db", "db-0").unwrap();
    assert!(s.connect(sa(db0.ipv4, TARGET)).echo_ok);
    s.finish();
}

#[test]
fn in_redirect_mode_the_gateway_resolves_the_service_that_kube_proxy_never_translated() {
    let s = Setup::new(ServiceProxy::Nftables, "redirect", false, "");
    let _gw = start_gateway(&s.lab, &s.files);
    // REDIRECT runs before kube-proxy's DNAT, and a connection keeps its first NAT: the
    // gateway sees the ClusterIP, picks the backend and connects there from its own address.
    let report = s.connect(sa(DB_IP, DB_PORT));
    assert!(report.echo_ok, "{report:?}");
    let denied = s.connect(sa(VAULT_IP, 8200));
    assert!(denied.reset, "{denied:?}");
    assert_names_service(&record_for(&s.files, VAULT_IP), "vault", "vault", 8200);
    let empty = s.connect(sa(EMPTY_IP, 80));
    assert!(empty.reset, "{empty:?}");
    assert_eq!(record_for(&s.files, EMPTY_IP)["reason"], "no_endpoints");
    s.finish();
}

/// tenant-a may reach what it resolved (only then: proof that an answer passed the DNS
/// proxy), DNS goes to kube-dns's endpoint (the lab's DNS host, which the Baseline opens),
/// tenant-b may send nothing.
const DNS_POLICIES: &str = "\
apiVersion: policy.chokepoint.dev/v1alpha1
kind: DeveloperNetworkPolicy
metadata: {namespace: tenant-a, name: sites}
spec:
  subject: {podSelector: {}}
  egress:
  - {name: by-name, action: Accept, to: [{domainNames: [site.example.test]}]}
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: closed}
spec:
  tier: Baseline
  priority: 50
  subject: {namespaces: {}}
  egress:
  - {name: dns, action: Accept, to: [{networks: [192.0.2.53/32]}]}
  - {name: rest, action: Deny, to: [{networks: [0.0.0.0/0]}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {namespace: tenant-b, name: no-egress}
spec:
  podSelector: {}
  policyTypes: [Egress]
";

/// A lab with a kube-dns Service whose endpoint is the lab's DNS server (dnsmasq), the node
/// treating its ClusterIP as `proxy` says, and a site only a name opens.
struct DnsSetup {
    dnsmasq: Dnsmasq,
    site: ServerHandle<TcpServeReport>,
    files: GatewayFiles,
    lab: Lab,
}

impl DnsSetup {
    /// `upstream`: where the gateway's DNS proxy forwards (a cluster's is kube-dns too).
    fn new(proxy: ServiceProxy, upstream: Ipv4Addr, extra: &str) -> DnsSetup {
        require_root();
        let lab = Topology::new()
            .namespace("tenant-a", [("tenant", "a")])
            .namespace("tenant-b", [("tenant", "b")])
            .pod(PodSpec::new("tenant-a", "web").label("app", "web"))
            .pod(PodSpec::new("tenant-b", "batch").label("app", "batch"))
            .host(HostSpec::new("dns", DNS_HOST))
            .host(HostSpec::new("site-a", HOST_A_IPV4))
            .build()
            .expect("build lab");
        let kube_dns = ServiceSpec::new("kube-system", "kube-dns", KUBE_DNS_IP.into())
            .endpoint(DNS_HOST.into())
            .port(Some("dns"), 53, Protocol::Udp, 53)
            .port(Some("dns-tcp"), 53, Protocol::Tcp, 53);
        let svc = LabServices::new(&lab, [kube_dns]);
        svc.install(&lab, proxy).expect("install kube-dns");
        let extra = format!("dns:\n  upstream: {upstream}\n{extra}");
        let files = GatewayFiles::new(&lab, &[("policies.yaml", DNS_POLICIES)], "tproxy", &extra);
        files.append_inventory(&svc.inventory_yaml());
        let dns_ns = lab.host("dns").unwrap().netns.clone();
        let zone = Zone::new().host("site.example.test", &[HOST_A_IPV4.into()], 300);
        let dnsmasq = Dnsmasq::start(
            &dns_ns,
            DNS_HOST.into(),
            &zone,
            60,
            Path::new(files.dir.path()),
        )
        .expect("dnsmasq");
        // Raw TCP shows no name: a port outside `fqdn.httpPorts`, where that is allowed.
        let site = tcp_server(
            &lab.host("site-a").unwrap().netns,
            sa(HOST_A_IPV4, SITE_PORT),
        );
        DnsSetup {
            dnsmasq,
            site,
            files,
            lab,
        }
    }

    fn netns(&self, namespace: &str, pod: &str) -> String {
        self.lab.pod(namespace, pod).unwrap().netns.clone()
    }

    /// tenant-a's web resolves the site through the kube-dns ClusterIP (UDP and TCP) and
    /// then reaches it; before, it could not.
    fn assert_web_resolves_through_kube_dns(&self) {
        let web = self.netns("tenant-a", "web");
        let before = tcp_connect(&web, sa(HOST_A_IPV4, SITE_PORT), 16, Duration::from_secs(5));
        assert!(before.reset, "not resolved yet: {before:?}");
        // dig only takes an answer from the server it asked: it came from the ClusterIP.
        for args in [&[][..], &["+tcp"]] {
            let answer = dig(&web, KUBE_DNS_IP.into(), "site.example.test", args);
            assert_eq!(answer.status, "NOERROR", "{args:?}: {}", answer.output);
            assert_eq!(
                answer.addresses,
                vec![IpAddr::from(HOST_A_IPV4)],
                "{args:?}"
            );
        }
        let after = tcp_connect(&web, sa(HOST_A_IPV4, SITE_PORT), 16, Duration::from_secs(5));
        assert!(after.echo_ok, "resolved through the proxy: {after:?}");
    }

    fn finish(self) {
        let _ = self.site.stop();
        self.dnsmasq.stop();
        teardown(self.lab);
    }
}

#[test]
fn dns_to_the_kube_dns_cluster_ip_is_answered_by_the_dns_proxy_and_a_denied_query_names_the_service()
 {
    // The gateway's own queries to the ClusterIP are translated by kube-proxy's output chain.
    let s = DnsSetup::new(ServiceProxy::Nftables, KUBE_DNS_IP, "");
    let gw = start_gateway(&s.lab, &s.files);
    // The DNS flow is decided on kube-dns's endpoint, which the Baseline opens.
    s.assert_web_resolves_through_kube_dns();

    // tenant-b may send nothing, DNS included: its queries go unanswered, and each record
    // names the kube-dns Service the pod addressed and the endpoint it was decided on.
    let batch = s.netns("tenant-b", "batch");
    for (protocol, args) in [("udp", &["+time=1"][..]), ("tcp", &["+tcp", "+time=1"])] {
        let denied = dig(&batch, KUBE_DNS_IP.into(), "site.example.test", args);
        assert!(denied.addresses.is_empty(), "{}", denied.output);
        let r = protocol_record_for(&s.files, KUBE_DNS_IP, protocol);
        assert_eq!(r["source"]["pod"], "batch", "{r:#}");
        assert_eq!(r["decided_by"]["policy"], "no-egress", "{r:#}");
        assert_eq!(r["destination"]["ip"], DNS_HOST.to_string(), "{r:#}");
        assert_eq!(r["destination"]["port"], 53, "{r:#}");
        assert_names_service(&r, "kube-system", "kube-dns", 53);
    }
    drop(gw);
    s.finish();
}

#[test]
fn dns_to_an_untranslated_kube_dns_cluster_ip_is_decided_on_an_endpoint_or_refused_with_resolve_kernel()
 {
    // Like IPVS: the ClusterIP is the node's own address, nothing translates it before the
    // capture. The Baseline denies the ClusterIP itself (it is in 0.0.0.0/0 and is no
    // endpoint): the query is answered only because the gateway decides on the endpoint.
    let s = DnsSetup::new(ServiceProxy::LocalVips, DNS_HOST, "");
    let gw = start_gateway(&s.lab, &s.files);
    s.assert_web_resolves_through_kube_dns();
    drop(gw);
    s.finish();

    // `services.resolve: kernel`: never decided on the ClusterIP, refused and audited.
    let s = DnsSetup::new(
        ServiceProxy::LocalVips,
        DNS_HOST,
        "services:\n  resolve: kernel\n",
    );
    let gw = start_gateway(&s.lab, &s.files);
    let web = s.netns("tenant-a", "web");
    let refused = dig(&web, KUBE_DNS_IP.into(), "site.example.test", &["+time=1"]);
    assert!(refused.addresses.is_empty(), "{}", refused.output);
    let r = protocol_record_for(&s.files, KUBE_DNS_IP, "udp");
    assert_eq!(r["reason"], "service_not_translated", "{r:#}");
    assert_eq!(r["destination"]["ip"], KUBE_DNS_IP.to_string(), "{r:#}");
    assert_names_service(&r, "kube-system", "kube-dns", 53);
    drop(gw);
    s.finish();
}

/// The flow log's lines for connections through the db Service, over every window.
fn db_service_flows(records: &[Value]) -> u64 {
    records
        .iter()
        .filter(|r| r["destination"]["service"]["name"] == "db")
        .map(|r| r["count"].as_u64().unwrap_or(0))
        .sum()
}

#[test]
fn on_the_fast_path_a_flow_kube_proxy_translated_stays_in_the_kernel_and_names_its_service() {
    use crate::fast_path::{
        BYTES_SENT, KERNEL, KERNEL_VERDICTS, PROXIED_TCP, PROXIED_UDP, PROXY_VERDICTS, metric,
    };
    // A cap of 2 connections: the later ones get a place only if the ended ones gave theirs
    // back, which conntrack announces under the backend (where the flow went), not under
    // the ClusterIP the pod addressed.
    let extra = "limits:\n  tcpConnectionsPerPod: 2\nflows:\n  enabled: true\n  sink: file\n  path: flows.log\n  window: 1s\n";
    let s = Setup::new(ServiceProxy::Nftables, KERNEL, true, extra);
    let gw = start_gateway(&s.lab, &s.files);
    let targets = [
        sa(DB_IP, DB_PORT),
        sa(DB_IPV6.parse::<IpAddr>().unwrap(), DB_PORT),
    ];
    for i in 0..6 {
        let to = targets[i % 2];
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let report = s.connect(to);
            if report.echo_ok {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "connection {i} to {to}: the places of the ended ones never came back: {report:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let udp = udp_send(&s.web().0, sa(DB_UDP_IP, 9000), Duration::from_secs(5));
    assert!(udp.answered, "{udp:?}");
    assert_eq!(udp.peer_seen.map(|p| p.ip()), Some(s.web().1));

    // Decided in the kernel's queue, never proxied, no byte through the gateway.
    let verdicts =
        [KERNEL_VERDICTS, PROXY_VERDICTS, PROXIED_TCP, PROXIED_UDP].map(|m| metric(&s.lab, m));
    assert!(
        verdicts[0] >= 7.0,
        "kernel, proxy, proxied tcp, udp: {verdicts:?}\n{}",
        gw.log_text()
    );
    assert_eq!(metric(&s.lab, PROXY_VERDICTS), 0.0);
    for reason in ["no_service_note", "service_note_mismatch"] {
        let series = format!("chokepoint_fast_path_to_proxy_total{{reason=\"{reason}\"}}");
        assert_eq!(metric(&s.lab, &series), 0.0, "{series}");
    }
    assert_eq!(metric(&s.lab, PROXIED_TCP), 0.0);
    assert_eq!(metric(&s.lab, PROXIED_UDP), 0.0);
    assert_eq!(metric(&s.lab, BYTES_SENT), 0.0);
    // At most refusals of the cap on the way (a place comes back shortly after its
    // connection ended), no other record.
    for r in s.files.audit_records() {
        assert_eq!(r["reason"], "connection_limit", "{r:#}");
        assert_names_service(&r, "db", "db", DB_PORT);
    }

    // The flow log names the Service and the backend each connection reached.
    let records = s
        .files
        .wait_flows(Duration::from_secs(10), |r| db_service_flows(r) >= 6);
    assert_eq!(db_service_flows(&records), 6, "{records:#?}");
    let db = s.lab.pod("db", "db-0").unwrap();
    for r in records
        .iter()
        .filter(|r| r["destination"]["service"]["name"] == "db")
    {
        assert_eq!(r["destination"]["pod"], "db-0", "{r:#}");
        assert_eq!(r["destination"]["port"], TARGET, "{r:#}");
        assert!(
            db.ips()
                .iter()
                .any(|ip| r["destination"]["ip"] == ip.to_string()),
            "{r:#}"
        );
        assert_names_service(r, "db", "db", DB_PORT);
    }
    let udp_flows: Vec<&Value> = records
        .iter()
        .filter(|r| r["destination"]["service"]["name"] == "db-udp")
        .collect();
    assert_eq!(udp_flows.len(), 1, "{records:#?}");
    assert_eq!(
        udp_flows[0]["destination"]["cluster_ip"],
        DB_UDP_IP.to_string()
    );
    s.finish();
}

/// Established TCP connections on the backends' port in `netns`.
fn established(lab: &chokepoint_lab::Lab, netns: &str) -> usize {
    let out = lab
        .command(netns, "ss")
        .args(["-Htn", "state", "established", "( sport = :8080 )"])
        .output()
        .expect("ss");
    String::from_utf8_lossy(&out.stdout).lines().count()
}

#[test]
fn on_the_fast_path_a_reload_that_denies_a_live_service_connection_resets_it_and_names_the_service()
{
    use crate::fast_path::KERNEL;
    let s = Setup::new(ServiceProxy::Nftables, KERNEL, false, "");
    let settings = std::fs::read_to_string(s.files.settings()).unwrap();
    std::fs::write(
        s.files.settings(),
        settings.replace(
            "  reloadInterval: 200ms\n",
            "  reloadInterval: 200ms\n  recheckOnReload: true\n",
        ),
    )
    .unwrap();
    let mut gw = start_gateway(&s.lab, &s.files);
    let mut held = HeldConnection::open(&s.web().0, sa(DB_IP, DB_PORT));
    // On the fast path: the gateway holds no socket of it.
    assert_eq!(
        crate::fast_path::metric(&s.lab, crate::fast_path::PROXIED_TCP),
        0.0
    );
    let db_netns = s.lab.pod("db", "db-0").unwrap().netns.clone();
    assert_eq!(
        established(&s.lab, &db_netns),
        1,
        "the backend holds the connection"
    );

    // Now the Admin tier keeps every pod away from db's pods too.
    s.files.write_policy(
        "deny-db.yaml",
        "\
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: protect-db}
spec:
  tier: Admin
  priority: 20
  subject: {namespaces: {}}
  egress:
  - name: no-db
    action: Deny
    to: [{namespaces: {matchLabels: {kubernetes.io/metadata.name: db}}}]
",
    );
    gw.wait_for_log("snapshot reloaded", Duration::from_secs(10));
    let ended = held.read_to_end();
    assert!(
        matches!(&ended, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "the live connection through the Service must be reset: {ended:?}\n{}",
        gw.log_text()
    );
    // The backend's end was reset too, not left established.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while established(&s.lab, &db_netns) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the backend's end of the revoked connection is still established"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = record_for(&s.files, DB_IP);
    assert_eq!(r["decided_by"]["policy"], "protect-db", "{r:#}");
    assert_eq!(
        r["destination"]["ip"],
        s.lab.pod("db", "db-0").unwrap().ipv4.to_string()
    );
    assert_names_service(&r, "db", "db", DB_PORT);
    s.finish();
}
