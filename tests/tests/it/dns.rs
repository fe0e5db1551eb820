//! DNS interception and FQDN allowlisting end to end: the real gateway in the lab, Debian's
//! dnsmasq as the canonical upstream on an outside host, real clients (`dig`, `curl`) in pod
//! namespaces and real HTTP/HTTPS servers (self-signed certificates) on outside hosts.
//!
//! Pods address their DNS to 10.96.0.10, a "cluster DNS Service" that exists nowhere: the
//! capture rules send port 53 to the gateway's DNS proxy whatever the server, and the proxy
//! answers from dnsmasq. Every name resolves to a lab host (or, for truncation, to
//! documentation addresses nobody connects to).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use chokepoint_lab::run::admin_get;
use chokepoint_lab::services::{
    Certificate, CurlResult, Dnsmasq, WebServer, Zone, curl, dig, resolv_conf,
};
use chokepoint_lab::{HOST_A_IPV4, HOST_B_IPV4, HOST_C_IPV4, HostSpec, Lab, PodSpec, Topology};
use chokepoint_tests::{
    Gateway, GatewayFiles, require_root, start_gateway, tcp_connect, tcp_server, teardown,
};
use serde_json::Value;

/// The address pods send DNS to; nothing owns it, the gateway captures it.
const CLUSTER_DNS: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
/// The lab's upstream DNS server (dnsmasq).
const UPSTREAM: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 53);
/// Another site, for CNAME targets.
const HOST_D_IPV4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 40);
/// The attacker's own name server, for `evil.test`.
const EVIL_DNS: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 53);
/// An office address: never reachable, even when declared.
const OFFICE_IPV4: Ipv4Addr = Ipv4Addr::new(192, 168, 10, 5);
/// Port of the raw TCP echo servers: none of `fqdn.httpPorts`, so a connection without a
/// name is allowed there by default.
const ECHO: u16 = 7000;
/// An HTTPS port (in `fqdn.httpPorts`) where site-a also runs an echo server.
const ECHO_HTTPS_ALT: u16 = 8443;

/// The cluster admin: the office range never, the internet closed except what namespaces
/// declare; DNS (inside 10.0.0.0/8) stays open.
const CLUSTER_POLICIES: &str = "\
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: lab-never-office}
spec:
  tier: Admin
  priority: 5
  subject: {namespaces: {}}
  egress:
  - {name: deny-192-168, action: Deny, to: [{networks: [192.168.0.0/16]}]}
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: lab-internet-closed}
spec:
  tier: Baseline
  priority: 50
  subject: {namespaces: {}}
  egress:
  - {name: cluster-internal, action: Accept, to: [{networks: [10.0.0.0/8]}]}
  - {name: internet-closed, action: Deny, to: [{networks: [0.0.0.0/0]}]}
";

/// tenant-a declares its sites; tenant-b only one.
const DEVELOPER_POLICIES: &str = "\
apiVersion: policy.chokepoint.dev/v1alpha1
kind: DeveloperNetworkPolicy
metadata: {namespace: tenant-a, name: sites}
spec:
  subject: {podSelector: {}}
  egress:
  - name: by-name
    action: Accept
    to:
    - domainNames:
      - allowed.example.test
      - other.example.test
      - short.example.test
      - www.shop.test
      - '*.apps.test'
      - big.test
      - office.example.test
---
apiVersion: policy.chokepoint.dev/v1alpha1
kind: DeveloperNetworkPolicy
metadata: {namespace: tenant-b, name: sites}
spec:
  subject: {podSelector: {}}
  egress:
  - {name: allowed-only, action: Accept, to: [{domainNames: [allowed.example.test]}]}
";

/// The upstream's zone. `big.test` has 61 addresses: more than fits a 512-byte UDP answer.
fn zone() -> Zone {
    let ip = |v: Ipv4Addr| IpAddr::from(v);
    let big: Vec<IpAddr> = (100..160)
        .map(|i| IpAddr::from([192, 0, 2, i]))
        .chain([ip(HOST_C_IPV4)])
        .collect();
    Zone::new()
        .host("allowed.example.test", &[ip(HOST_A_IPV4)], 300)
        .host("other.example.test", &[ip(HOST_B_IPV4)], 300)
        .host("short.example.test", &[ip(HOST_C_IPV4)], 1)
        .host("office.example.test", &[ip(OFFICE_IPV4)], 300)
        // A chain of two CNAMEs inside one answer.
        .cname("www.shop.test", "shop.cdn.test", 300)
        .cname("shop.cdn.test", "edge.cdn.test", 300)
        .host("edge.cdn.test", &[ip(HOST_D_IPV4)], 300)
        // Every name under apps.test; apps.test itself is another host.
        .wildcard("apps.test", ip(HOST_B_IPV4))
        .host("apps.test", &[ip(HOST_D_IPV4)], 300)
        .host("big.test", &big, 300)
        // An HTTPS record with an ECH configuration: priority 1, target ".", key 5 (ech),
        // 4 bytes. Then SVCB, the same data.
        .raw_record("allowed.example.test", 65, "0001000005000401020304")
        .raw_record("allowed.example.test", 64, "0001000005000401020304")
        // The attacker's zone, passed on as its server answers (a plain forwarder).
        .delegate("evil.test", EVIL_DNS.into())
}

/// What the attacker's server answers for `evil.test`: a CNAME to a name another zone owns,
/// with an address for that name (the attacker's host, site-d).
fn evil_zone() -> Zone {
    Zone::new()
        .cname("x.evil.test", "allowed.example.test", 300)
        .host("allowed.example.test", &[IpAddr::from(HOST_D_IPV4)], 300)
}

const CERT_NAMES: [&str; 4] = [
    "allowed.example.test",
    "other.example.test",
    "www.shop.test",
    "evil.test",
];

/// One lab with everything the stories need; dropped in reverse order of creation.
struct Setup {
    // Servers first: they run inside lab namespaces that teardown deletes.
    web: Vec<WebServer>,
    echo: Vec<chokepoint_lab::probe::ServerHandle<chokepoint_lab::probe::TcpServeReport>>,
    dnsmasq: Option<Dnsmasq>,
    evil_dns: Option<Dnsmasq>,
    gateway: Option<Gateway>,
    files: GatewayFiles,
    resolv: PathBuf,
    cert: Certificate,
    lab: Lab,
}

impl Setup {
    fn new(dns_settings: &str) -> Setup {
        require_root();
        let lab = Topology::new()
            .namespace("tenant-a", [("tenant", "a")])
            .namespace("tenant-b", [("tenant", "b")])
            .pod(PodSpec::new("tenant-a", "web").label("app", "web"))
            .pod(PodSpec::new("tenant-b", "web").label("app", "web"))
            .host(HostSpec::new("dns", UPSTREAM))
            .host(HostSpec::new("evil-dns", EVIL_DNS))
            .host(HostSpec::new("site-a", HOST_A_IPV4))
            .host(HostSpec::new("site-b", HOST_B_IPV4))
            .host(HostSpec::new("site-c", HOST_C_IPV4))
            .host(HostSpec::new("site-d", HOST_D_IPV4))
            .host(HostSpec::new("office", OFFICE_IPV4))
            .build()
            .expect("build lab");
        let extra = format!("dns:\n  upstream: {UPSTREAM}\n{dns_settings}");
        let files = GatewayFiles::new(
            &lab,
            &[
                ("cluster.yaml", CLUSTER_POLICIES),
                ("developer.yaml", DEVELOPER_POLICIES),
            ],
            "tproxy",
            &extra,
        );
        let dir = files.dir.path().to_owned();
        let dnsmasq = Dnsmasq::start(&host_ns(&lab, "dns"), UPSTREAM.into(), &zone(), 60, &dir)
            .expect("start dnsmasq");
        let evil_dns = Dnsmasq::start(
            &host_ns(&lab, "evil-dns"),
            EVIL_DNS.into(),
            &evil_zone(),
            60,
            &dir,
        )
        .expect("start the attacker's dnsmasq");
        let cert = Certificate::self_signed(&CERT_NAMES, &dir).expect("certificate");
        let mut web = Vec::new();
        let mut echo = Vec::new();
        for (host, ip) in [
            ("site-a", HOST_A_IPV4),
            ("site-b", HOST_B_IPV4),
            ("site-c", HOST_C_IPV4),
            ("site-d", HOST_D_IPV4),
            ("office", OFFICE_IPV4),
        ] {
            let ns = host_ns(&lab, host);
            let at = |port| SocketAddr::new(ip.into(), port);
            web.push(WebServer::start(&ns, at(80), host, None).expect("http server"));
            web.push(WebServer::start(&ns, at(443), host, Some(&cert)).expect("https server"));
            echo.push(tcp_server(&ns, at(ECHO)));
            if host == "site-a" {
                echo.push(tcp_server(&ns, at(ECHO_HTTPS_ALT)));
            }
        }
        let gateway = start_gateway(&lab, &files);
        let resolv = resolv_conf(&dir, CLUSTER_DNS.into()).expect("resolv.conf");
        Setup {
            web,
            echo,
            dnsmasq: Some(dnsmasq),
            evil_dns: Some(evil_dns),
            gateway: Some(gateway),
            files,
            resolv,
            cert,
            lab,
        }
    }

    fn pod(&self, namespace: &str) -> String {
        self.lab.pod(namespace, "web").unwrap().netns.clone()
    }

    fn pod_ip(&self, namespace: &str) -> IpAddr {
        self.lab.pod(namespace, "web").unwrap().ips()[0]
    }

    fn dig(
        &self,
        namespace: &str,
        name: &str,
        args: &[&str],
    ) -> chokepoint_lab::services::DigAnswer {
        dig(&self.pod(namespace), CLUSTER_DNS.into(), name, args)
    }

    fn curl(&self, namespace: &str, args: &[&str]) -> CurlResult {
        let cacert = self.cert.cert.display().to_string();
        let mut all = vec!["--cacert", cacert.as_str()];
        all.extend_from_slice(args);
        curl(&self.pod(namespace), &self.resolv, &all)
    }

    /// `https://name/` sent to the address curl resolves for `via` (the shape of fronting).
    fn https_via(&self, namespace: &str, name: &str, via: &str) -> CurlResult {
        let connect_to = format!("{name}:443:{via}:443");
        self.curl(namespace, &["--connect-to", &connect_to, &https(name)])
    }

    /// A plain TCP connection from the pod of `namespace`, with a 10 s read timeout.
    fn connect(&self, namespace: &str, to: SocketAddr) -> TcpStream {
        let stream = self
            .lab
            .run_in(&self.pod(namespace), || {
                TcpStream::connect_timeout(&to, Duration::from_secs(5))
            })
            .expect("netns")
            .expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
    }

    /// Raw TCP to an echo server (no name shown).
    fn echo(&self, namespace: &str, ip: Ipv4Addr) -> chokepoint_lab::probe::TcpConnectReport {
        tcp_connect(
            &self.pod(namespace),
            SocketAddr::new(ip.into(), ECHO),
            4096,
            Duration::from_secs(5),
        )
    }

    /// Audit records with this reason, waiting up to 5 s for at least `n`.
    fn audited(&self, reason: &str, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let found: Vec<Value> = self
                .files
                .audit_records()
                .into_iter()
                .filter(|r| r["reason"] == reason)
                .collect();
            if found.len() >= n || Instant::now() > deadline {
                return found;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn metric(&self, series: &str) -> f64 {
        let (status, body) = admin_get(&self.lab, "/metrics");
        assert_eq!(status, 200);
        body.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{body}"))
    }

    fn finish(mut self) {
        self.web.clear();
        for s in self.echo.drain(..) {
            let _ = s.stop();
        }
        self.dnsmasq.take();
        self.evil_dns.take();
        if let Some(gw) = self.gateway.take() {
            assert!(gw.stop().success(), "the gateway exits cleanly");
        }
        teardown(self.lab);
    }
}

fn host_ns(lab: &Lab, name: &str) -> String {
    lab.host(name).unwrap().netns.clone()
}

fn https(name: &str) -> String {
    format!("https://{name}/")
}

fn http(name: &str) -> String {
    format!("http://{name}/")
}

fn only<'a>(records: &'a [Value], what: &str) -> &'a Value {
    assert_eq!(records.len(), 1, "exactly one {what} record: {records:#?}");
    &records[0]
}

#[test]
fn declared_names_connect_and_only_for_the_namespace_that_resolved_them() {
    let s = Setup::new("");

    // tenant-a resolves through the gateway, then connects: HTTPS and HTTP by name.
    let r = s.curl("tenant-a", &[&https("allowed.example.test")]);
    assert_eq!((r.exit, r.status), (0, 200), "{r:?}");
    assert_eq!(r.body, "site-a host=allowed.example.test\n");
    let r = s.curl("tenant-a", &[&http("other.example.test")]);
    assert_eq!((r.exit, r.status), (0, 200), "{r:?}");
    assert_eq!(r.body, "site-b host=other.example.test\n");

    // tenant-b may reach allowed.example.test too, but has not resolved it: the IP tenant-a
    // resolved means nothing for tenant-b.
    let report = s.echo("tenant-b", HOST_A_IPV4);
    assert!(report.reset && !report.echo_ok, "{report:?}");
    let denied = s.audited("rule", 1);
    let d = only(&denied, "tenant-b denial");
    assert_eq!(d["source"]["namespace"], "tenant-b");
    assert_eq!(d["destination"]["ip"], HOST_A_IPV4.to_string());
    assert_eq!(d["destination"]["names"], serde_json::json!([]));
    assert_eq!(d["decided_by"]["tier"], "Baseline");
    assert_eq!(d["decided_by"]["rule"], "internet-closed");
    // Once it resolves the name itself, it connects.
    let a = s.dig("tenant-b", "allowed.example.test", &[]);
    assert_eq!(a.status, "NOERROR", "{}", a.output);
    assert_eq!(a.addresses, [IpAddr::from(HOST_A_IPV4)]);
    let report = s.echo("tenant-b", HOST_A_IPV4);
    assert!(report.echo_ok, "{report:?}");
    // The destination sees the pod's own address.
    assert_eq!(report.peer_seen.map(|p| p.ip()), Some(s.pod_ip("tenant-b")));
    // ... but not a name it did not declare, resolved or not.
    let r = s.curl("tenant-b", &[&http("other.example.test")]);
    assert_ne!(r.exit, 0, "{r:?}");

    // A declared name that resolves into 192.168.0.0/16 stays closed: Admin decides first.
    let r = s.curl("tenant-a", &[&http("office.example.test")]);
    assert_ne!(r.exit, 0, "{r:?}");
    let office: Vec<Value> = s
        .audited("rule", 3)
        .into_iter()
        .filter(|r| r["destination"]["ip"] == OFFICE_IPV4.to_string())
        .collect();
    let o = only(&office, "office denial");
    assert_eq!(o["decided_by"]["tier"], "Admin");
    assert_eq!(o["decided_by"]["policy"], "lab-never-office");
    assert_eq!(
        o["destination"]["names"],
        serde_json::json!(["office.example.test"]),
        "the audit record says which name the pod was after"
    );
    assert!(s.metric("chokepoint_dns_queries_total{transport=\"udp\",result=\"ok\"}") > 0.0);
    s.finish();
}

#[test]
fn sni_and_host_must_fit_a_declared_name_resolved_to_that_address() {
    let s = Setup::new("");
    // Domain fronting: curl resolves other.example.test (allowed, site-b) and sends the SNI
    // of allowed.example.test (allowed too, but resolved to site-a) to site-b's address.
    let r = s.https_via("tenant-a", "allowed.example.test", "other.example.test");
    assert_ne!(r.exit, 0, "{r:?}");
    let fronting = s.audited("not_resolved", 1);
    let f = only(&fronting, "not_resolved");
    assert_eq!(f["destination"]["ip"], HOST_B_IPV4.to_string());
    assert_eq!(f["destination"]["port"], 443);
    assert_eq!(f["destination"]["sni"], "allowed.example.test");
    assert_eq!(f["decided_by"]["policy"], "sites");
    assert_eq!(f["decided_by"]["kind"], "DeveloperNetworkPolicy");

    // An SNI that no rule allows, to an allowed name's address.
    let r = s.https_via("tenant-a", "evil.test", "allowed.example.test");
    assert_ne!(r.exit, 0, "{r:?}");
    let m = s.audited("sni_mismatch", 1);
    let m = only(&m, "sni_mismatch");
    assert_eq!(m["destination"]["ip"], HOST_A_IPV4.to_string());
    assert_eq!(m["destination"]["sni"], "evil.test");
    assert_eq!(
        m["destination"]["names"],
        serde_json::json!(["allowed.example.test"])
    );

    // Plain HTTP with a Host header that no rule allows.
    let r = s.curl(
        "tenant-a",
        &["-H", "Host: evil.test", &http("allowed.example.test")],
    );
    assert_ne!(r.exit, 0, "{r:?}");
    let h = s.audited("host_mismatch", 1);
    let h = only(&h, "host_mismatch");
    assert_eq!(h["destination"]["host"], "evil.test");
    assert_eq!(h["destination"]["port"], 80);

    // The honest requests still work, and raw TCP to a port that is no HTTP(S) one (no name:
    // allowed there by default) too.
    let r = s.curl("tenant-a", &[&https("other.example.test")]);
    assert_eq!((r.exit, r.status), (0, 200), "{r:?}");
    let report = s.echo("tenant-a", HOST_B_IPV4);
    assert!(report.echo_ok, "{report:?}");
    assert_eq!(
        s.metric("chokepoint_name_checks_total{result=\"not_resolved\"}"),
        1.0
    );
    assert!(s.metric("chokepoint_name_checks_total{result=\"passed\"}") >= 1.0);
    assert_eq!(
        s.metric("chokepoint_name_checks_total{result=\"no_name_allowed\"}"),
        1.0
    );
    s.finish();
}

/// An attacker on an IP accepted by name (a CDN's, say) sends bytes that show no name
/// (garbage, no ClientHello, no request head) to an HTTPS port: by default refused and
/// audited, as a client of that port always shows a name; to a port of server-first
/// protocols (MySQL, SMTP, SSH) the same bytes pass.
#[test]
fn without_a_name_connections_to_http_ports_are_refused_by_default_and_pass_elsewhere() {
    let s = Setup::new("fqdn:\n  peekTimeout: 200ms\n");
    let a = s.dig("tenant-a", "allowed.example.test", &[]);
    assert_eq!(a.addresses, [IpAddr::from(HOST_A_IPV4)], "{}", a.output);
    // Silence past `peekTimeout` (the probe waits for the server to speak first).
    let silent = tcp_connect(
        &s.pod("tenant-a"),
        SocketAddr::new(HOST_A_IPV4.into(), ECHO_HTTPS_ALT),
        512,
        Duration::from_secs(5),
    );
    assert!(!silent.echo_ok && silent.reset, "{silent:?}");
    // Bytes that are neither a ClientHello nor a request head.
    let back = garbage_to(&s, SocketAddr::new(HOST_A_IPV4.into(), 443));
    assert!(back.is_empty(), "{} bytes back", back.len());
    let n = s.audited("no_name", 2);
    let ports: Vec<&Value> = n.iter().map(|r| &r["destination"]["port"]).collect();
    assert_eq!(ports, [ECHO_HTTPS_ALT, 443], "{n:#?}");
    assert!(n.iter().all(|r| r["source"]["namespace"] == "tenant-a"));
    let elsewhere = s.echo("tenant-a", HOST_A_IPV4);
    assert!(elsewhere.echo_ok, "{elsewhere:?}");
    assert_eq!(
        s.metric("chokepoint_name_checks_total{result=\"no_name_denied\"}"),
        2.0
    );
    assert_eq!(
        s.metric("chokepoint_name_checks_total{result=\"no_name_allowed\"}"),
        1.0
    );
    // A client that shows its name still gets through on the HTTPS port.
    let r = s.curl("tenant-a", &[&https("allowed.example.test")]);
    assert_eq!((r.exit, r.status), (0, 200), "{r:?}");
    s.finish();
}

/// `withoutName: allow` is one value for every port, as before: the same bytes to the HTTPS
/// port are relayed.
#[test]
fn with_without_name_allow_a_connection_without_a_name_passes_on_http_ports_too() {
    let s = Setup::new("fqdn:\n  withoutName: allow\n  peekTimeout: 200ms\n");
    s.dig("tenant-a", "allowed.example.test", &[]);
    let back = garbage_to(&s, SocketAddr::new(HOST_A_IPV4.into(), ECHO_HTTPS_ALT));
    // The echo server's peer line, then the bytes.
    assert!(
        back.starts_with(b"peer ") && back.ends_with(GARBAGE),
        "{back:?}"
    );
    assert!(s.audited("no_name", 1).is_empty());
    s.finish();
}

/// Neither TLS nor HTTP: no name to show.
const GARBAGE: &[u8] = b"\x00\x01\x02 not a ClientHello, not a request head \xff\xfe";

/// Sends [`GARBAGE`] from tenant-a's pod first thing, half-closes, and returns all it gets
/// back (nothing when the gateway resets the connection).
fn garbage_to(s: &Setup, to: SocketAddr) -> Vec<u8> {
    let mut stream = s.connect("tenant-a", to);
    let _ = stream.write_all(GARBAGE);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut back = Vec::new();
    let _ = stream.read_to_end(&mut back);
    back
}

#[test]
fn connections_without_a_name_are_refused_when_configured() {
    let s = Setup::new("fqdn:\n  withoutName: deny\n  peekTimeout: 200ms\n");
    let a = s.dig("tenant-a", "allowed.example.test", &[]);
    assert_eq!(a.addresses, [IpAddr::from(HOST_A_IPV4)], "{}", a.output);
    // The echo server speaks first; the pod sends nothing before it: no name.
    let report = s.echo("tenant-a", HOST_A_IPV4);
    assert!(!report.echo_ok, "{report:?}");
    let n = s.audited("no_name", 1);
    let n = only(&n, "no_name");
    assert_eq!(n["destination"]["port"], ECHO);
    let r = s.curl("tenant-a", &[&https("allowed.example.test")]);
    assert_eq!((r.exit, r.status), (0, 200), "{r:?}");
    s.finish();
}

#[test]
fn expiry_denies_new_connections_and_spares_established_ones() {
    // TTL 1 s, clamped to at least 1 s, no grace.
    let s = Setup::new("  minTtl: 1s\n  grace: 0s\n");
    let a = s.dig("tenant-a", "short.example.test", &[]);
    assert_eq!(a.addresses, [IpAddr::from(HOST_C_IPV4)], "{}", a.output);
    let to = SocketAddr::new(HOST_C_IPV4.into(), ECHO);
    let mut held: TcpStream = s
        .lab
        .run_in(&s.pod("tenant-a"), move || {
            TcpStream::connect_timeout(&to, Duration::from_secs(5))
        })
        .expect("enter pod netns")
        .expect("connect while the name is fresh");
    held.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut greeting = String::new();
    BufReader::new(held.try_clone().unwrap())
        .read_line(&mut greeting)
        .unwrap();
    assert!(greeting.starts_with("peer "), "{greeting:?}");

    std::thread::sleep(Duration::from_millis(2500));
    let report = s.echo("tenant-a", HOST_C_IPV4);
    assert!(report.reset && !report.echo_ok, "expired: {report:?}");
    let expired = s.audited("rule", 1);
    let e = only(&expired, "expiry denial");
    assert_eq!(e["destination"]["ip"], HOST_C_IPV4.to_string());
    assert_eq!(e["decided_by"]["rule"], "internet-closed");

    // The connection made before expiry still works.
    held.write_all(b"still here").unwrap();
    let mut echoed = [0u8; 10];
    held.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"still here");

    // Resolving again opens the door again.
    s.dig("tenant-a", "short.example.test", &[]);
    assert!(s.echo("tenant-a", HOST_C_IPV4).echo_ok);
    drop(held);
    s.finish();
}

#[test]
fn wildcards_cname_chains_tcp_dns_and_truncated_answers() {
    let s = Setup::new("");
    // `*.apps.test`: one label or several, not apps.test itself (another address here).
    for name in ["one.apps.test", "a.b.c.apps.test"] {
        let a = s.dig("tenant-a", name, &[]);
        assert_eq!(a.addresses, [IpAddr::from(HOST_B_IPV4)], "{}", a.output);
    }
    assert!(s.echo("tenant-a", HOST_B_IPV4).echo_ok);
    let a = s.dig("tenant-a", "apps.test", &[]);
    assert_eq!(a.addresses, [IpAddr::from(HOST_D_IPV4)], "{}", a.output);
    let report = s.echo("tenant-a", HOST_D_IPV4);
    assert!(
        report.reset,
        "apps.test is not under *.apps.test: {report:?}"
    );

    // A CNAME chain in one answer: the queried name counts for the final address.
    let a = s.dig("tenant-a", "www.shop.test", &[]);
    assert_eq!(a.cnames, ["shop.cdn.test", "edge.cdn.test"], "{}", a.output);
    assert_eq!(a.addresses, [IpAddr::from(HOST_D_IPV4)]);
    let r = s.curl("tenant-a", &[&https("www.shop.test")]);
    assert_eq!((r.exit, r.status), (0, 200), "{r:?}");
    assert_eq!(r.body, "site-d host=www.shop.test\n");

    // DNS over TCP.
    let a = s.dig("tenant-a", "other.example.test", &["+tcp"]);
    assert_eq!(a.status, "NOERROR", "{}", a.output);
    assert_eq!(a.addresses, [IpAddr::from(HOST_B_IPV4)]);
    assert!(s.metric("chokepoint_dns_queries_total{transport=\"tcp\",result=\"ok\"}") >= 1.0);

    // 61 addresses do not fit 512 bytes: without EDNS the pod gets a truncated answer ...
    let a = s.dig("tenant-a", "big.test", &["+noedns", "+ignore"]);
    assert!(a.flags.iter().any(|f| f == "tc"), "{}", a.output);
    assert!(a.addresses.len() < 61, "{}", a.output);
    // ... and its retry over TCP (through the gateway again) the whole answer.
    let a = s.dig("tenant-a", "big.test", &["+noedns"]);
    assert_eq!(a.addresses.len(), 61, "{}", a.output);
    assert!(!a.flags.iter().any(|f| f == "tc"), "{}", a.output);
    // With EDNS the whole answer fits one datagram.
    let a = s.dig("tenant-a", "big.test", &["+bufsize=4096"]);
    assert_eq!(a.addresses.len(), 61, "{}", a.output);
    assert!(s.metric("chokepoint_dns_truncated_retries_total") >= 1.0);
    // Every address of the large answer was learned, the lab host among them.
    assert!(s.echo("tenant-a", HOST_C_IPV4).echo_ok);
    s.finish();
}

#[test]
fn upstream_down_answers_servfail_within_the_timeout() {
    let mut s = Setup::new("  timeout: 1s\n");
    let a = s.dig("tenant-a", "allowed.example.test", &[]);
    assert_eq!(a.status, "NOERROR", "{}", a.output);
    s.dnsmasq.take().expect("dnsmasq").stop();
    for args in [&[][..], &["+tcp"][..]] {
        let started = Instant::now();
        // dig waits up to 5 s: a SERVFAIL means the proxy answered, not that dig gave up.
        let a = s.dig("tenant-a", "other.example.test", args);
        eprintln!("SERVFAIL {args:?} after {:?}", started.elapsed());
        assert_eq!(a.status, "SERVFAIL", "{}", a.output);
    }
    assert!(s.metric("chokepoint_dns_queries_total{transport=\"udp\",result=\"servfail\"}") >= 1.0);
    s.finish();
}

#[test]
fn a_denied_dns_flow_is_not_answered_and_is_audited() {
    // tenant-b's DNS goes to 192.0.2.99, an address the Baseline closes (the gateway decides
    // the DNS flow itself like any other).
    let s = Setup::new("");
    let a = dig(
        &s.pod("tenant-b"),
        Ipv4Addr::new(192, 0, 2, 99).into(),
        "allowed.example.test",
        &["+time=2"],
    );
    assert_eq!(a.status, "", "no answer at all: {}", a.output);
    let denied = s.audited("rule", 1);
    let d = only(&denied, "DNS flow denial");
    assert_eq!(d["destination"]["port"], 53);
    assert_eq!(d["destination"]["protocol"], "udp");
    assert_eq!(d["source"]["namespace"], "tenant-b");
    s.finish();
}

/// A raw DNS query for `name` (type A) with transaction id `id`.
fn raw_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD, one question
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// Many queries in flight from one pod socket (glibc sends A and AAAA from one socket at once;
/// load generators reuse ports): every one is answered, none is swallowed by the socket the
/// previous answer left from.
#[test]
fn queries_in_flight_from_one_socket_are_all_answered() {
    const QUERIES: u16 = 300;
    let s = Setup::new("");
    let server = SocketAddr::new(CLUSTER_DNS.into(), 53);
    let answered = s
        .lab
        .run_in(&s.pod("tenant-a"), move || {
            let socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
            socket.connect(server)?;
            socket.set_read_timeout(Some(Duration::from_secs(3)))?;
            let names = [
                "allowed.example.test",
                "other.example.test",
                "www.shop.test",
            ];
            let mut ids = std::collections::BTreeSet::new();
            let mut buf = [0u8; 1500];
            // Paced, so that answers are leaving while queries are still arriving; answers are
            // read as they come (a full receive buffer would drop them here, not there).
            socket.set_nonblocking(true)?;
            for id in 0..QUERIES {
                socket.send(&raw_query(id, names[usize::from(id) % names.len()]))?;
                std::thread::sleep(Duration::from_micros(200));
                while let Ok(n) = socket.recv(&mut buf) {
                    if n >= 2 {
                        ids.insert(u16::from_be_bytes([buf[0], buf[1]]));
                    }
                }
            }
            socket.set_nonblocking(false)?;
            while ids.len() < usize::from(QUERIES) {
                match socket.recv(&mut buf) {
                    Ok(n) if n >= 2 => {
                        ids.insert(u16::from_be_bytes([buf[0], buf[1]]));
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            Ok::<_, std::io::Error>(ids.len())
        })
        .expect("enter pod netns")
        .expect("udp socket");
    let (_, metrics) = admin_get(&s.lab, "/metrics");
    let dns: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("chokepoint_dns_") && !l.ends_with(" 0"))
        .collect();
    assert_eq!(
        answered,
        usize::from(QUERIES),
        "every query is answered; {dns:#?}"
    );
    s.finish();
}

/// The DNS proxy reads queries with one TPROXY socket per data-path worker (`SO_REUSEPORT`:
/// the kernel spreads the pods' flows over them): there are as many sockets as workers, and
/// queries from many source ports, which land on all of them, are every one answered.
#[test]
fn every_worker_reads_a_dns_socket_of_its_own_and_each_answers() {
    const PORTS: u16 = 64;
    let s = Setup::new("");
    let out = s
        .lab
        .command(s.lab.node_netns(), "ss")
        .args(["-Huln", "( sport = :15053 )"])
        .output()
        .expect("ss");
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    let v4 = listing
        .lines()
        .filter(|l| l.contains("0.0.0.0:15053"))
        .count();
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(v4, workers, "one IPv4 DNS socket per worker:\n{listing}");

    let server = SocketAddr::new(CLUSTER_DNS.into(), 53);
    let answered = s
        .lab
        .run_in(&s.pod("tenant-a"), move || {
            let mut answered = 0;
            for id in 0..PORTS {
                // A socket of its own each: another source port, hashed anew.
                let socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
                socket.connect(server)?;
                socket.set_read_timeout(Some(Duration::from_secs(3)))?;
                socket.send(&raw_query(id, "allowed.example.test"))?;
                let mut buf = [0u8; 1500];
                if let Ok(n) = socket.recv(&mut buf)
                    && n >= 2
                    && u16::from_be_bytes([buf[0], buf[1]]) == id
                {
                    answered += 1;
                }
            }
            Ok::<_, std::io::Error>(answered)
        })
        .expect("enter pod netns")
        .expect("udp sockets");
    assert_eq!(
        answered, PORTS,
        "every query answered, whichever socket took it"
    );
    s.finish();
}

/// What pods resolved survives a restart of the gateway, orderly (saved on SIGTERM) or not
/// (saved every 10 s): their applications may not look the name up again for a long time.
#[test]
fn resolved_names_survive_a_gateway_restart() {
    let mut s = Setup::new("  stateFile: names.json\n");
    let a = s.dig("tenant-a", "allowed.example.test", &[]);
    assert_eq!(a.addresses, [IpAddr::from(HOST_A_IPV4)], "{}", a.output);
    assert!(s.gateway.take().unwrap().stop().success());
    s.gateway = Some(start_gateway(&s.lab, &s.files));
    let report = s.echo("tenant-a", HOST_A_IPV4);
    assert!(report.echo_ok, "known after an orderly restart: {report:?}");

    let a = s.dig("tenant-a", "other.example.test", &[]);
    assert_eq!(a.addresses, [IpAddr::from(HOST_B_IPV4)], "{}", a.output);
    // Past one save interval, then a crash: the rules stay (fail closed), the file has it.
    std::thread::sleep(Duration::from_secs(11));
    s.gateway.take().unwrap().kill();
    s.gateway = Some(start_gateway(&s.lab, &s.files));
    let report = s.echo("tenant-a", HOST_B_IPV4);
    assert!(report.echo_ok, "known after a crash: {report:?}");
    // A name nobody resolved is still unknown.
    assert!(s.echo("tenant-a", HOST_C_IPV4).reset);
    s.finish();
}

#[test]
fn a_namespace_flooding_lookups_does_not_evict_another_namespaces_names() {
    // A small cache; a long grace keeps every entry live for the whole test, so only eviction
    // can remove one.
    let s = Setup::new("  maxEntries: 100\n  grace: 300s\n");
    // tenant-a resolves a short-lived name (the closest to expiry in the cache) and uses it.
    let a = s.dig("tenant-a", "short.example.test", &[]);
    assert_eq!(a.addresses, [IpAddr::from(HOST_C_IPV4)], "{}", a.output);
    assert!(s.echo("tenant-a", HOST_C_IPV4).echo_ok);

    // The attacker in tenant-b looks up 300 distinct names (any name may be resolved): three
    // times the cache.
    let names: Vec<String> = (0..300).map(|i| format!("flood{i}.apps.test")).collect();
    let out = s
        .lab
        .command(&s.pod("tenant-b"), "dig")
        .arg(format!("@{CLUSTER_DNS}"))
        .args(["+short", "+time=5", "+tries=2"])
        .args(&names)
        .output()
        .expect("dig");
    let answered = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| *l == HOST_B_IPV4.to_string())
        .count();
    assert_eq!(answered, 300, "{}", String::from_utf8_lossy(&out.stdout));

    // tenant-a's live entry stayed: its next connection is accepted without a new lookup.
    let report = s.echo("tenant-a", HOST_C_IPV4);
    assert!(report.echo_ok, "tenant-a's name was evicted: {report:?}");
    // tenant-b paid for its own flood.
    assert!(s.metric("chokepoint_dns_cache_evictions_total{reason=\"cache_full\"}") >= 200.0);
    assert!(s.metric("chokepoint_dns_cache_entries") <= 100.0);
    s.finish();
}

#[test]
fn an_attacker_zone_cannot_teach_an_address_for_a_name_it_does_not_own() {
    let s = Setup::new("");
    // tenant-b may reach allowed.example.test. Its attacker asks for a name of their own
    // zone, whose answer (passed on by the forwarder) claims allowed.example.test is site-d.
    let a = s.dig("tenant-b", "x.evil.test", &[]);
    assert_eq!(a.cnames, ["allowed.example.test"], "{}", a.output);
    assert_eq!(a.addresses, [IpAddr::from(HOST_D_IPV4)], "{}", a.output);
    // Connecting there with the allowed name fails: site-d is known to tenant-b only as
    // x.evil.test, which no rule allows.
    let r = s.https_via("tenant-b", "allowed.example.test", &HOST_D_IPV4.to_string());
    assert_ne!(
        r.exit, 0,
        "the attacker's address was learned for the allowed name: {r:?}"
    );
    let denied = s.audited("rule", 1);
    let d = only(&denied, "denial of site-d");
    assert_eq!(d["destination"]["ip"], HOST_D_IPV4.to_string());
    assert_eq!(
        d["destination"]["names"],
        serde_json::json!(["x.evil.test"])
    );
    // The name's own answer still works.
    let r = s.curl("tenant-b", &[&https("allowed.example.test")]);
    assert_eq!((r.exit, r.status), (0, 200), "{r:?}");
    assert_eq!(r.body, "site-a host=allowed.example.test\n");
    s.finish();
}

#[test]
fn pods_under_name_rules_learn_no_ech_configuration() {
    let s = Setup::new("");
    for rr in ["HTTPS", "SVCB"] {
        // The upstream has the record ...
        let direct = dig(
            &host_ns(&s.lab, "dns"),
            UPSTREAM.into(),
            "allowed.example.test",
            &["-t", rr],
        );
        assert!(direct.output.contains("ANSWER: 1,"), "{}", direct.output);
        // ... a pod whose policy has domainNames gets no data, over UDP and TCP.
        for args in [&["-t", rr][..], &["-t", rr, "+tcp"][..]] {
            let a = s.dig("tenant-a", "allowed.example.test", args);
            assert_eq!(a.status, "NOERROR", "{}", a.output);
            assert!(
                a.output.contains("ANSWER: 0,"),
                "{rr} {args:?}: {}",
                a.output
            );
        }
    }
    assert!(s.metric("chokepoint_dns_queries_total{transport=\"udp\",result=\"withheld\"}") >= 2.0);
    // Addresses are answered as ever.
    let a = s.dig("tenant-a", "allowed.example.test", &[]);
    assert_eq!(a.addresses, [IpAddr::from(HOST_A_IPV4)], "{}", a.output);
    s.finish();
}

/// An HTTP/1.1 server that keeps connections open (the lab's Python server closes after each
/// answer): every request head is answered with `host=<Host> target=<target>`; a request with
/// `Connection: close` gets its answer and the connection closed, as RFC 9112 asks.
struct KeepAliveServer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl KeepAliveServer {
    fn start(lab: &Lab, host: &str, addr: SocketAddr) -> KeepAliveServer {
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = lab
            .run_in(&host_ns(lab, host), || std::net::TcpListener::bind(addr))
            .expect("netns")
            .expect("bind");
        listener.set_nonblocking(true).unwrap();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        std::thread::spawn(move || serve_keep_alive(conn));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        KeepAliveServer {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for KeepAliveServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_keep_alive(conn: TcpStream) {
    conn.set_nonblocking(false).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut writer = conn.try_clone().unwrap();
    let mut reader = BufReader::new(conn);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let target = request_line.split(' ').nth(1).unwrap_or("").to_owned();
        let (mut host, mut close) = (String::new(), false);
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("host") {
                    host = v.trim().to_owned();
                } else if k.eq_ignore_ascii_case("connection") {
                    close |= v.to_ascii_lowercase().contains("close");
                }
            }
        }
        let body = format!("host={host} target={target}\n");
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n{}\r\n{body}",
            body.len(),
            if close { "Connection: close\r\n" } else { "" }
        );
        if writer.write_all(answer.as_bytes()).is_err() || close {
            return;
        }
    }
}

/// Reads one answer of [`serve_keep_alive`]'s (head and Content-Length body); `None` when
/// the connection ends first.
fn read_answer(reader: &mut BufReader<TcpStream>) -> Option<String> {
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some(v) = line.strip_prefix("Content-Length: ") {
            length = v.parse().ok()?;
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).ok()?;
    String::from_utf8(body).ok()
}

#[test]
fn one_connection_accepted_by_host_carries_no_request_for_another_name() {
    let s = Setup::new("");
    let port = 8000;
    let _server =
        KeepAliveServer::start(&s.lab, "site-a", SocketAddr::new(HOST_A_IPV4.into(), port));
    let a = s.dig("tenant-a", "allowed.example.test", &[]);
    assert_eq!(a.addresses, [IpAddr::from(HOST_A_IPV4)], "{}", a.output);
    let connect = || {
        let stream = s.connect("tenant-a", SocketAddr::new(HOST_A_IPV4.into(), port));
        let reader = BufReader::new(stream.try_clone().unwrap());
        (stream, reader)
    };
    let get = |host: &str| format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");

    // Keep-alive: the first request is answered, a second one for another name on the same
    // connection never is.
    let (mut stream, mut reader) = connect();
    stream
        .write_all(get("allowed.example.test").as_bytes())
        .unwrap();
    let first = read_answer(&mut reader);
    assert_eq!(
        first.as_deref(),
        Some("host=allowed.example.test target=/\n")
    );
    let _ = stream.write_all(get("evil.test").as_bytes());
    let second = read_answer(&mut reader);
    assert_eq!(
        second, None,
        "a second request on the connection was served"
    );

    // Pipelined: both requests in one write; only the first is answered.
    let (mut stream, mut reader) = connect();
    let both = get("allowed.example.test") + &get("evil.test");
    stream.write_all(both.as_bytes()).unwrap();
    assert_eq!(
        read_answer(&mut reader).as_deref(),
        Some("host=allowed.example.test target=/\n")
    );
    assert_eq!(
        read_answer(&mut reader),
        None,
        "the pipelined request was served"
    );

    // Absolute form: the target names another site than Host; servers follow the target.
    let (mut stream, mut reader) = connect();
    let _ =
        stream.write_all(b"GET http://evil.test/ HTTP/1.1\r\nHost: allowed.example.test\r\n\r\n");
    assert_eq!(
        read_answer(&mut reader),
        None,
        "an absolute-form target for evil.test was served"
    );
    let refused = s.audited("host_mismatch", 1);
    assert_eq!(
        only(&refused, "absolute-form refusal")["destination"]["ip"],
        HOST_A_IPV4.to_string()
    );
    // The target alone, naming the allowed site, is fine.
    let (mut stream, mut reader) = connect();
    stream
        .write_all(b"GET http://allowed.example.test/x HTTP/1.1\r\n\r\n")
        .unwrap();
    assert_eq!(
        read_answer(&mut reader).as_deref(),
        Some("host= target=http://allowed.example.test/x\n")
    );
    s.finish();
}

/// A ClientHello naming `sni`, padded to about `padding` bytes and spread over TLS records of
/// at most 16 KiB, as large post-quantum hellos are.
fn large_client_hello(sni: &str, padding: u16) -> Vec<u8> {
    let be16 = |n: usize| (n as u16).to_be_bytes();
    let mut server_name = vec![0u8];
    server_name.extend(be16(sni.len()));
    server_name.extend(sni.as_bytes());
    let mut extensions = [
        &[0u8, 0][..],
        &be16(server_name.len() + 2),
        &be16(server_name.len()),
    ]
    .concat();
    extensions.extend(server_name);
    extensions.extend([0, 21]);
    extensions.extend(padding.to_be_bytes());
    extensions.extend(std::iter::repeat_n(0u8, usize::from(padding)));
    let mut body = vec![3, 3];
    body.extend([7u8; 32]);
    body.extend([0, 0, 2, 0x13, 0x01, 1, 0]);
    body.extend(be16(extensions.len()));
    body.extend(extensions);
    let mut handshake = vec![1];
    handshake.extend(&(body.len() as u32).to_be_bytes()[1..]);
    handshake.extend(body);
    handshake
        .chunks(16 * 1024)
        .flat_map(|record| [&[22u8, 3, 1][..], &be16(record.len()), record].concat())
        .collect()
}

#[test]
fn a_client_hello_spread_over_several_records_shows_its_name() {
    let s = Setup::new("fqdn:\n  withoutName: deny\n");
    let a = s.dig("tenant-a", "allowed.example.test", &[]);
    assert_eq!(a.addresses, [IpAddr::from(HOST_A_IPV4)], "{}", a.output);
    let send = |sni: &str| {
        let hello = large_client_hello(sni, 50_000);
        assert!(hello.len() > 3 * 16 * 1024);
        let mut stream = s.connect("tenant-a", SocketAddr::new(HOST_A_IPV4.into(), ECHO));
        let _ = stream.write_all(&hello);
        let _ = stream.shutdown(std::net::Shutdown::Write);
        // The echo server answers with its peer line, then the bytes.
        let mut back = Vec::new();
        let _ = stream.read_to_end(&mut back);
        (hello, back)
    };
    // 52 KB in four records with an allowed name: relayed as they came.
    let (hello, back) = send("allowed.example.test");
    assert!(
        back.ends_with(&hello),
        "refused or cut: {} bytes back",
        back.len()
    );
    // The name is read, not guessed: another name in the same shape is refused.
    let (_, back) = send("evil.test");
    assert!(back.is_empty(), "{} bytes back", back.len());
    let refused = s.audited("sni_mismatch", 1);
    assert_eq!(
        only(&refused, "sni refusal")["destination"]["sni"],
        "evil.test"
    );
    s.finish();
}
