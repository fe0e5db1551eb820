//! Metadata-server protection end to end: the real gateway in the lab, a fake metadata
//! service at 169.254.169.254 and a fake kube2iam (which knows pods by source IP only) on an
//! outside host, raw HTTP from pod namespaces, and botocore as a real client.
//!
//! The story is `deploy/examples/metadata`: only tenant-a may reach the metadata server.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use chokepoint_lab::http::{HttpExchange, exchange, exchange_in_parts};
use chokepoint_lab::imds::{FakeKind, FakeMetadata, NODE_ROLE, USER_DATA, access_key_id};
use chokepoint_lab::{HOST_B_IPV4, HostSpec, Lab, METADATA_IPV4, METADATA_IPV6, PodSpec, Topology};
use chokepoint_tests::{Gateway, GatewayFiles, admin_get, require_root, start_gateway, teardown};
use serde_json::Value;

const POLICY: &str = include_str!("../../../deploy/examples/metadata/cluster-network-policy.yaml");
/// The kube2iam-like endpoint: an outside host.
const KUBE2IAM: SocketAddr = chokepoint_lab::imds::STORY_ENDPOINT;
const METADATA: SocketAddr = SocketAddr::new(IpAddr::V4(METADATA_IPV4), 80);
const ROLE: &str = chokepoint_lab::imds::STORY_ROLE;
const T: Duration = Duration::from_secs(10);

struct Fixture {
    lab: Lab,
    files: GatewayFiles,
    gateway: Option<Gateway>,
    imds: FakeMetadata,
    kube2iam: FakeMetadata,
}

impl Fixture {
    /// The lab, both fakes and a gateway whose settings end with `metadata` (YAML).
    fn new(metadata: &str) -> Fixture {
        Fixture::with(Topology::new(), metadata)
    }

    fn with(topology: Topology, metadata: &str) -> Fixture {
        require_root();
        let lab = chokepoint_lab::imds::story(topology)
            .pod(PodSpec::new("tenant-a", "rogue").annotation("iam.amazonaws.com/role", "admin"))
            .host(HostSpec::new("nothing-listens", HOST_B_IPV4))
            .build()
            .expect("build lab");
        let roles: HashMap<IpAddr, String> = [("web", ROLE), ("rogue", "admin")]
            .into_iter()
            .flat_map(|(name, role)| {
                let pod = lab.pod("tenant-a", name).unwrap();
                pod.ips().into_iter().map(move |ip| (ip, role.to_owned()))
            })
            .collect();
        let imds = FakeMetadata::start(
            &lab.host("metadata").unwrap().netns,
            SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 80),
            FakeKind::Imds,
        )
        .expect("fake metadata service");
        let kube2iam = FakeMetadata::start(
            &lab.host("kube2iam").unwrap().netns,
            KUBE2IAM,
            FakeKind::Kube2iam { roles },
        )
        .expect("fake kube2iam");
        let files = GatewayFiles::new(&lab, &[("metadata.yaml", POLICY)], "tproxy", metadata);
        let gateway = Some(start_gateway(&lab, &files));
        Fixture {
            lab,
            files,
            gateway,
            imds,
            kube2iam,
        }
    }

    fn netns(&self, namespace: &str, pod: &str) -> String {
        self.lab.pod(namespace, pod).unwrap().netns.clone()
    }

    fn ip(&self, namespace: &str, pod: &str) -> IpAddr {
        IpAddr::V4(self.lab.pod(namespace, pod).unwrap().ipv4)
    }

    /// Sends raw bytes from a pod to the metadata address.
    fn send(&self, pod: (&str, &str), raw: &str) -> HttpExchange {
        exchange(&self.netns(pod.0, pod.1), METADATA, raw.as_bytes(), T)
    }

    fn metric(&self, series: &str) -> u64 {
        let (status, text) = admin_get(&self.lab, "/metrics");
        assert_eq!(status, 200, "{text}");
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    }

    /// Waits (10 s at most) for a counter to reach `want`: some are counted just after the
    /// pod's connection closes.
    fn assert_metric(&self, series: &str, want: u64) {
        let deadline = std::time::Instant::now() + T;
        loop {
            let got = self.metric(series);
            if got >= want || std::time::Instant::now() > deadline {
                assert_eq!(got, want, "{series}");
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the gateway (flushing the audit log) and returns every record.
    fn audit(&mut self) -> Vec<Value> {
        if let Some(gw) = self.gateway.take() {
            assert!(gw.stop().success());
        }
        self.files.audit_records()
    }

    fn finish(mut self) {
        self.gateway.take();
        teardown(self.lab);
    }
}

/// `METHOD PATH HTTP/1.1` with Host and `Connection: close`, and extra header lines.
fn request(method: &str, path: &str, headers: &[&str]) -> String {
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: 169.254.169.254\r\n");
    for h in headers {
        r.push_str(h);
        r.push_str("\r\n");
    }
    r.push_str("Connection: close\r\n\r\n");
    r
}

const CREDS: &str = "/latest/meta-data/iam/security-credentials/";

fn creds_path(role: &str) -> String {
    format!("{CREDS}{role}")
}

fn assert_credentials(body: &str, role: &str) {
    let creds: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(creds["AccessKeyId"], access_key_id(role), "{body}");
}

#[test]
fn a_pod_of_the_allowed_namespace_gets_its_credentials_over_imdsv1_and_imdsv2() {
    let mut f = Fixture::new(&format!("metadata:\n  endpoint: http://{KUBE2IAM}\n"));
    let web = ("tenant-a", "web");

    // IMDSv1: list the role, fetch its credentials.
    let list = f.send(web, &request("GET", CREDS, &[]));
    assert_eq!(
        (list.first().status, list.first().body.as_str()),
        (200, ROLE)
    );
    let v1 = f.send(web, &request("GET", &creds_path(ROLE), &[]));
    assert_eq!(v1.first().status, 200);
    assert_credentials(&v1.first().body, ROLE);

    // IMDSv2: a token with its TTL, then the same with the token.
    let token = f.send(
        web,
        &request(
            "PUT",
            "/latest/api/token",
            &["X-aws-ec2-metadata-token-ttl-seconds: 21600"],
        ),
    );
    let token = token.first();
    assert_eq!(token.status, 200, "{token:?}");
    assert_eq!(
        token.header("x-aws-ec2-metadata-token-ttl-seconds"),
        Some("21600")
    );
    let with_token = format!("X-aws-ec2-metadata-token: {}", token.body);
    let listed = f.send(web, &request("GET", CREDS, &[&with_token]));
    assert_eq!(listed.first().body, ROLE);
    let v2 = f.send(web, &request("GET", &creds_path(ROLE), &[&with_token]));
    assert_credentials(&v2.first().body, ROLE);
    let bad = f.send(
        web,
        &request("GET", CREDS, &["X-aws-ec2-metadata-token: forged"]),
    );
    assert_eq!(
        bad.first().status,
        401,
        "the endpoint's own answers pass through"
    );
    let no_ttl = f.send(web, &request("PUT", "/latest/api/token", &[]));
    assert_eq!(no_ttl.first().status, 400);

    // kube2iam saw every request from the pod's own IP, with the gateway's identity headers.
    let seen = f.kube2iam.seen();
    assert_eq!(seen.len(), 7, "{seen:#?}");
    for s in &seen {
        assert_eq!(s.peer.ip(), f.ip("tenant-a", "web"), "{s:?}");
        assert_eq!(s.header("x-chokepoint-pod-namespace"), Some("tenant-a"));
        assert_eq!(s.header("x-chokepoint-pod-name"), Some("web"));
        assert_eq!(s.header("x-chokepoint-service-account"), Some("web-sa"));
        assert_eq!(s.header("x-chokepoint-role"), Some(ROLE));
        assert_eq!(
            s.header("x-chokepoint-pod-ip"),
            Some(f.ip("tenant-a", "web").to_string().as_str())
        );
        assert!(s.header("x-chokepoint-pod-uid").is_some());
        assert_eq!(s.header("host"), Some("169.254.169.254"));
    }
    assert!(
        f.imds.seen().is_empty(),
        "rewrite never reaches the real metadata service"
    );
    f.assert_metric(
        r#"chokepoint_metadata_requests_total{result="forwarded"}"#,
        7,
    );
    assert!(f.audit().is_empty(), "allowed requests are not audited");
    f.finish();
}

/// kube2iam as it is usually deployed: hostNetwork, on the node's own address. Its replies to
/// the pod's address come back to the gateway's socket (the capture rules route locally
/// generated replies of the gateway's connections to it), and it sees the pod's IP.
#[test]
fn an_endpoint_on_the_node_itself_sees_the_pod_ip() {
    let node_endpoint = SocketAddr::new(chokepoint_lab::NODE_IPV4.into(), 8181);
    let f = Fixture::new(&format!("metadata:\n  endpoint: http://{node_endpoint}\n"));
    let pod_ip = f.ip("tenant-a", "web");
    let local = FakeMetadata::start(
        f.lab.node_netns(),
        node_endpoint,
        FakeKind::Kube2iam {
            roles: [(pod_ip, ROLE.to_owned())].into_iter().collect(),
        },
    )
    .expect("kube2iam on the node");
    let v1 = f.send(("tenant-a", "web"), &request("GET", &creds_path(ROLE), &[]));
    assert_eq!(v1.first().status, 200, "{v1:?}");
    assert_credentials(&v1.first().body, ROLE);
    let seen = local.stop();
    assert_eq!(seen.len(), 1, "{seen:#?}");
    assert_eq!(seen[0].peer.ip(), pod_ip);
    f.finish();
}

#[test]
fn a_pod_of_another_namespace_is_reset_and_audited() {
    let mut f = Fixture::new(&format!("metadata:\n  endpoint: http://{KUBE2IAM}\n"));
    let denied = f.send(("tenant-b", "web"), &request("GET", CREDS, &[]));
    assert!(denied.reset && denied.responses.is_empty(), "{denied:?}");
    let records = f.audit();
    assert_eq!(records.len(), 1, "{records:#?}");
    let r = &records[0];
    assert_eq!(r["reason"], "rule");
    assert_eq!(r["source"]["namespace"], "tenant-b");
    assert_eq!(r["destination"]["ip"], "169.254.169.254");
    assert_eq!(r["destination"]["port"], 80);
    assert_eq!(r["decided_by"]["policy"], "metadata-only-tenant-a");
    assert_eq!(r["decided_by"]["rule"], "no-metadata-server");
    assert!(f.kube2iam.seen().is_empty() && f.imds.seen().is_empty());
    f.finish();
}

#[test]
fn user_data_and_identity_documents_are_refused_with_403_and_audited() {
    let mut f = Fixture::new(&format!("metadata:\n  endpoint: http://{KUBE2IAM}\n"));
    let paths = [
        "/latest/user-data",
        "/latest/dynamic/instance-identity/document",
        "/latest/meta-data/iam/info",
    ];
    for path in paths {
        let x = f.send(("tenant-a", "web"), &request("GET", path, &[]));
        let r = x.first();
        assert_eq!(r.status, 403, "{path}: {r:?}");
        assert_eq!(
            r.body,
            format!(
                "chokepoint: GET {path} is not an allowed metadata path (metadata.allowPaths)\n"
            )
        );
        assert!(!r.body.contains(USER_DATA));
    }
    assert!(f.kube2iam.seen().is_empty(), "{:#?}", f.kube2iam.seen());
    f.assert_metric(
        r#"chokepoint_metadata_requests_total{result="path_denied"}"#,
        3,
    );
    let records = f.audit();
    let denied: Vec<(&str, &str)> = records
        .iter()
        .map(|r| {
            (
                r["reason"].as_str().unwrap(),
                r["destination"]["path"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        denied,
        paths.map(|p| ("metadata_path_denied", p)).to_vec(),
        "{records:#?}"
    );
    let r = &records[0];
    assert_eq!(r["verdict"], "deny");
    assert_eq!(r["source"]["pod"], "web");
    assert_eq!(r["destination"]["method"], "GET");
    assert_eq!(r["destination"]["host"], "169.254.169.254");
    assert_eq!(
        r["decided_by"]["tier"], "Default",
        "the connection itself was allowed"
    );
    f.finish();
}

#[test]
fn spoofed_identity_headers_are_stripped_and_the_endpoint_sees_the_pod_ip() {
    let f = Fixture::new(&format!("metadata:\n  endpoint: http://{KUBE2IAM}\n"));
    let x = f.send(
        ("tenant-a", "web"),
        &request(
            "GET",
            CREDS,
            &[
                "X-Chokepoint-Pod-Namespace: kube-system",
                "x-chokepoint-role: admin",
                "X-Chokepoint-Pod-Ip: 10.9.9.9",
                "X-Chokepoint-Anything-Else: 1",
                // Underscores: one name with the dashes to CGI-style servers.
                "X_Chokepoint_Role: admin",
                "x-chokepoint_pod-namespace: kube-system",
                "X_CHOKEPOINT_POD_IP: 10.9.9.9",
            ],
        ),
    );
    assert_eq!(x.first().status, 200);
    let seen = f.kube2iam.seen();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!(s.peer.ip(), f.ip("tenant-a", "web"));
    let ours: Vec<(&str, &str)> = s
        .headers
        .iter()
        .filter(|(k, _)| k.replace('_', "-").starts_with("x-chokepoint-"))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .filter(|(k, _)| *k != "x-chokepoint-pod-uid")
        .collect();
    let ip = f.ip("tenant-a", "web").to_string();
    assert_eq!(
        ours,
        [
            ("x-chokepoint-pod-ip", ip.as_str()),
            ("x-chokepoint-pod-namespace", "tenant-a"),
            ("x-chokepoint-pod-name", "web"),
            ("x-chokepoint-service-account", "web-sa"),
            ("x-chokepoint-role", ROLE),
        ],
        "{s:#?}"
    );
    f.finish();
}

#[test]
fn a_role_the_namespace_does_not_allow_and_other_pods_roles_are_refused() {
    let mut f = Fixture::new(&format!("metadata:\n  endpoint: http://{KUBE2IAM}\n"));
    let rogue = f.send(("tenant-a", "rogue"), &request("GET", CREDS, &[]));
    assert_eq!(rogue.first().status, 403);
    assert_eq!(
        rogue.first().body,
        "chokepoint: role admin is not allowed in namespace tenant-a (iam.amazonaws.com/allowed-roles annotation)\n"
    );
    let other = f.send(
        ("tenant-a", "web"),
        &request("GET", &creds_path("admin"), &[]),
    );
    assert_eq!(
        other.first().body,
        "chokepoint: this pod's role is app-reader, not admin\n"
    );
    // Not a credentials path: forwarded, without a role header.
    let token = f.send(
        ("tenant-a", "rogue"),
        &request(
            "PUT",
            "/latest/api/token",
            &["X-aws-ec2-metadata-token-ttl-seconds: 60"],
        ),
    );
    assert_eq!(token.first().status, 200);
    let seen = f.kube2iam.seen();
    assert_eq!(seen.len(), 1, "{seen:#?}");
    assert_eq!(seen[0].header("x-chokepoint-role"), None);
    let reasons: Vec<Value> = f.audit().iter().map(|r| r["reason"].clone()).collect();
    assert_eq!(reasons, ["metadata_role_denied", "metadata_role_denied"]);
    f.finish();
}

#[test]
fn smuggling_shaped_and_malformed_requests_are_refused_before_the_endpoint() {
    let f = Fixture::new(&format!("metadata:\n  endpoint: http://{KUBE2IAM}\n"));
    let head = "Host: 169.254.169.254\r\n";
    let cases: [(&str, String, u16); 10] = [
        (
            "Content-Length and Transfer-Encoding",
            format!(
                "POST {CREDS} HTTP/1.1\r\n{head}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            ),
            400,
        ),
        (
            "Transfer-Encoding then Content-Length",
            format!(
                "GET {CREDS} HTTP/1.1\r\n{head}Transfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n0\r\n\r\n"
            ),
            400,
        ),
        (
            "differing Content-Lengths",
            format!(
                "GET {CREDS} HTTP/1.1\r\n{head}Content-Length: 0\r\nContent-Length: 5\r\n\r\nhello"
            ),
            400,
        ),
        (
            "a body",
            format!(
                "PUT /latest/api/token HTTP/1.1\r\n{head}X-aws-ec2-metadata-token-ttl-seconds: 60\r\nContent-Length: 5\r\n\r\nhello"
            ),
            413,
        ),
        (
            "two Hosts",
            format!("GET {CREDS} HTTP/1.1\r\n{head}Host: evil\r\n\r\n"),
            400,
        ),
        (
            "absolute form",
            format!("GET http://169.254.169.254/latest/user-data HTTP/1.1\r\n{head}\r\n"),
            400,
        ),
        (
            "dot segments",
            format!("GET {CREDS}../../user-data HTTP/1.1\r\n{head}\r\n"),
            400,
        ),
        (
            "encoded dots",
            format!("GET {CREDS}%2e%2e/%2e%2e/user-data HTTP/1.1\r\n{head}\r\n"),
            400,
        ),
        (
            "Transfer-Encoding in HTTP/1.0",
            format!("GET {CREDS} HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            400,
        ),
        ("not HTTP", "GET\u{1}/ HTTP/1.1\r\n\r\n".to_owned(), 400),
    ];
    for (what, raw, status) in &cases {
        let x = f.send(("tenant-a", "web"), raw);
        assert_eq!(x.first().status, *status, "{what}: {x:?}");
        assert!(
            x.closed && x.responses.len() == 1,
            "{what}: the connection must close after: {x:?}"
        );
    }
    assert!(f.kube2iam.seen().is_empty(), "{:#?}", f.kube2iam.seen());
    f.assert_metric(
        r#"chokepoint_metadata_requests_total{result="bad_request"}"#,
        cases.len() as u64,
    );
    f.finish();
}

#[test]
fn oversized_heads_and_too_many_headers_get_431() {
    let f = Fixture::new(&format!(
        "metadata:\n  endpoint: http://{KUBE2IAM}\n  maxHeaderBytes: 4096\n  maxHeaders: 16\n"
    ));
    let big = format!("X-Big: {}", "a".repeat(5000));
    let x = f.send(("tenant-a", "web"), &request("GET", CREDS, &[&big]));
    assert_eq!(x.first().status, 431, "{x:?}");
    let many: Vec<String> = (0..20).map(|i| format!("X-H{i}: v")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let x = f.send(("tenant-a", "web"), &request("GET", CREDS, &many));
    assert_eq!(x.first().status, 431, "{x:?}");
    // Just inside the limits works.
    let some: Vec<String> = (0..10).map(|i| format!("X-H{i}: v")).collect();
    let some: Vec<&str> = some.iter().map(String::as_str).collect();
    assert_eq!(
        f.send(("tenant-a", "web"), &request("GET", CREDS, &some))
            .first()
            .status,
        200
    );
    assert_eq!(f.kube2iam.seen().len(), 1);
    f.finish();
}

#[test]
fn slow_clients_time_out_pipelined_requests_are_each_checked_and_http_1_0_works() {
    let f = Fixture::new(&format!(
        "metadata:\n  endpoint: http://{KUBE2IAM}\n  timeouts: {{headerRead: 1s}}\n"
    ));
    let web = f.netns("tenant-a", "web");
    // Half a head, then nothing: the gateway closes (the test waits at most 10 s).
    let slow = exchange(
        &web,
        METADATA,
        format!("GET {CREDS} HTTP/1.1\r\nHost: x\r\n").as_bytes(),
        T,
    );
    assert!(
        slow.closed && !slow.timed_out && slow.responses.is_empty(),
        "{slow:?}"
    );
    f.assert_metric("chokepoint_metadata_client_timeouts_total", 1);

    // Three requests in one write: each is decided on its own.
    let keep = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n");
    let pipelined = format!(
        "{}{}{}",
        keep(CREDS),
        keep("/latest/user-data"),
        request("GET", &creds_path(ROLE), &[])
    );
    let x = exchange(&web, METADATA, pipelined.as_bytes(), T);
    let statuses: Vec<u16> = x.responses.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 403, 200], "{x:?}");
    assert_credentials(&x.responses[2].body, ROLE);

    // Pipelined in pieces, a byte boundary inside the second request.
    let (a, b) = pipelined.split_at(keep(CREDS).len() + 10);
    let x = exchange_in_parts(
        &web,
        METADATA,
        &[a.as_bytes(), b.as_bytes()],
        Duration::from_millis(100),
        T,
    );
    assert_eq!(
        x.responses.iter().map(|r| r.status).collect::<Vec<_>>(),
        [200, 403, 200]
    );

    // HTTP/1.0 without a Host: answered, then closed.
    let old = exchange(
        &web,
        METADATA,
        format!("GET {CREDS} HTTP/1.0\r\n\r\n").as_bytes(),
        T,
    );
    assert!(old.closed, "{old:?}");
    assert_eq!((old.first().status, old.first().body.as_str()), (200, ROLE));
    let seen = f.kube2iam.seen();
    assert_eq!(seen.len(), 5, "{seen:#?}");
    assert_eq!(
        seen[4].header("host"),
        Some("169.254.169.254"),
        "the upstream gets a Host"
    );
    f.finish();
}

#[test]
fn the_endpoint_being_down_gives_502_at_once_and_a_metric() {
    let f = Fixture::new(&format!(
        "metadata:\n  endpoint: http://{HOST_B_IPV4}:8181\n"
    ));
    let x = f.send(("tenant-a", "web"), &request("GET", CREDS, &[]));
    let r = x.first();
    assert_eq!(r.status, 502, "{r:?}");
    assert!(
        r.body
            .starts_with("chokepoint: the metadata upstream 198.51.100.20:8181 failed"),
        "{r:?}"
    );
    f.assert_metric(
        r#"chokepoint_metadata_requests_total{result="upstream_error"}"#,
        1,
    );
    f.finish();
}

#[test]
fn passthrough_forwards_to_the_metadata_service_from_the_pods_address() {
    let f = Fixture::new("metadata:\n  mode: passthrough\n");
    let web = ("tenant-a", "web");
    let list = f.send(web, &request("GET", CREDS, &["X-Chokepoint-Role: admin"]));
    assert_eq!(list.first().body, NODE_ROLE);
    let creds = f.send(web, &request("GET", &creds_path(NODE_ROLE), &[]));
    assert_credentials(&creds.first().body, NODE_ROLE);
    assert_eq!(
        f.send(web, &request("GET", "/latest/user-data", &[]))
            .first()
            .status,
        403
    );
    let seen = f.imds.seen();
    assert_eq!(seen.len(), 2, "{seen:#?}");
    for s in &seen {
        assert_eq!(s.peer.ip(), f.ip("tenant-a", "web"));
        assert!(
            !s.headers
                .iter()
                .any(|(k, _)| k.starts_with("x-chokepoint-")),
            "{s:?}"
        );
    }
    assert!(f.kube2iam.seen().is_empty());
    f.finish();
}

#[test]
fn deny_mode_answers_403_and_audits() {
    let mut f = Fixture::new("metadata:\n  mode: deny\n");
    let x = f.send(
        ("tenant-a", "web"),
        &request("PUT", "/latest/api/token", &[]),
    );
    assert_eq!(x.first().status, 403);
    assert!(x.first().body.contains("metadata.mode: deny"));
    assert!(f.imds.seen().is_empty() && f.kube2iam.seen().is_empty());
    let records = f.audit();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["reason"], "metadata_disabled");
    assert_eq!(records[0]["destination"]["path"], "/latest/api/token");
    f.finish();
}

#[test]
fn the_ipv6_metadata_address_reaches_an_ipv4_endpoint_from_the_pods_ipv4_address() {
    let f = Fixture::with(
        Topology::new().ipv6(true),
        &format!("metadata:\n  endpoint: http://{KUBE2IAM}\n"),
    );
    let to = SocketAddr::new(IpAddr::V6(METADATA_IPV6), 80);
    let x = exchange(
        &f.netns("tenant-a", "web"),
        to,
        request("GET", &creds_path(ROLE), &[]).as_bytes(),
        T,
    );
    assert_eq!(x.first().status, 200, "{x:?}");
    assert_credentials(&x.first().body, ROLE);
    let seen = f.kube2iam.seen();
    assert_eq!(
        seen[0].peer.ip(),
        f.ip("tenant-a", "web"),
        "kube2iam knows the pod by its IPv4 address"
    );
    let pod_v6 = f
        .lab
        .pod("tenant-a", "web")
        .unwrap()
        .ipv6
        .unwrap()
        .to_string();
    assert_eq!(seen[0].header("x-chokepoint-pod-ip"), Some(pod_v6.as_str()));
    f.finish();
}

#[test]
fn botocore_fetches_instance_metadata_credentials_through_the_gateway() {
    let f = Fixture::new(&format!("metadata:\n  endpoint: http://{KUBE2IAM}\n"));
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/metadata/botocore_credentials.py"
    );
    let mut cmd = f.lab.command(&f.netns("tenant-a", "web"), "python3");
    cmd.arg(script);
    // botocore honours proxy settings and the IMDS switches: leave it at its defaults.
    for var in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
        "AWS_EC2_METADATA_DISABLED",
        "AWS_EC2_METADATA_SERVICE_ENDPOINT",
        "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE",
        "AWS_EC2_METADATA_V1_DISABLED",
    ] {
        cmd.env_remove(var);
    }
    let out = cmd
        .output()
        .expect("run python3 (scripts/setup.sh installs botocore)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "botocore failed (is it installed? scripts/setup.sh installs it):\n{stdout}\n{stderr}"
    );
    let creds: Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(creds["role_name"], ROLE);
    assert_eq!(creds["access_key"], access_key_id(ROLE));
    assert_eq!(creds["expiry_time"], "2099-01-01T00:00:00Z");
    // botocore used IMDSv2: a token first, then the token on every GET.
    let seen = f.kube2iam.seen();
    assert_eq!(seen[0].method, "PUT", "{seen:#?}");
    assert_eq!(seen[0].path, "/latest/api/token");
    assert!(
        seen[1..]
            .iter()
            .all(|s| s.header("x-aws-ec2-metadata-token").is_some()),
        "{seen:#?}"
    );
    assert!(seen.iter().all(|s| s.peer.ip() == f.ip("tenant-a", "web")));
    f.finish();
}

/// A keep-alive connection from `pod`: connected inside its namespace, used from here.
fn keep_alive(f: &Fixture, pod: (&str, &str)) -> std::net::TcpStream {
    let s = chokepoint_lab::netns::run_in(&f.netns(pod.0, pod.1), || {
        std::net::TcpStream::connect_timeout(&METADATA, T)
    })
    .expect("enter netns")
    .expect("connect");
    s.set_read_timeout(Some(T)).unwrap();
    s
}

/// Writes one keep-alive request and reads one response (`None`: reset or closed).
fn ask(s: &mut std::net::TcpStream, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let raw = format!("GET {path} HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n");
    s.write_all(raw.as_bytes()).ok()?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        got.extend_from_slice(&buf[..n]);
        let (responses, _) = chokepoint_lab::http::parse_responses(&got, false);
        if let Some(r) = responses.first() {
            return Some(r.status);
        }
    }
}

#[test]
fn a_kept_alive_connection_is_reset_when_policy_revokes_it_or_its_ip_changes_hands() {
    let mut f = Fixture::new(&format!("metadata:\n  endpoint: http://{KUBE2IAM}\n"));
    let generation = |f: &Fixture| f.metric("chokepoint_snapshot_generation");

    // Policy revoked between two requests of one connection.
    let mut s = keep_alive(&f, ("tenant-a", "web"));
    assert_eq!(ask(&mut s, CREDS), Some(200));
    let deny_all = POLICY.replace("values: [tenant-a]", "values: [nobody]");
    let before = generation(&f);
    f.files.write_policy("metadata.yaml", &deny_all);
    f.assert_metric("chokepoint_snapshot_generation", before + 1);
    assert_eq!(
        ask(&mut s, CREDS),
        None,
        "the next request resets the connection"
    );
    f.assert_metric(
        r#"chokepoint_metadata_requests_total{result="policy_denied"}"#,
        1,
    );
    f.files.write_policy("metadata.yaml", POLICY);
    f.assert_metric("chokepoint_snapshot_generation", before + 2);

    // The pod's IP now belongs to another pod (same name, new UID).
    let mut s = keep_alive(&f, ("tenant-a", "web"));
    assert_eq!(ask(&mut s, CREDS), Some(200));
    let uid = format!("{}-pod-0", f.lab.prefix());
    let inventory = f
        .lab
        .inventory_yaml()
        .replace(&uid, "a-new-pod-on-the-same-ip");
    assert_ne!(inventory, f.lab.inventory_yaml());
    let path = f.files.dir.path().join("inventory.yaml");
    std::fs::write(path.with_extension("tmp"), inventory).unwrap();
    std::fs::rename(path.with_extension("tmp"), &path).unwrap();
    f.assert_metric("chokepoint_snapshot_generation", before + 3);
    assert_eq!(ask(&mut s, CREDS), None);
    f.assert_metric(
        r#"chokepoint_metadata_requests_total{result="identity_changed"}"#,
        1,
    );
    // A new connection from the new pod is served.
    assert_eq!(
        f.send(("tenant-a", "web"), &request("GET", CREDS, &[]))
            .first()
            .status,
        200
    );

    let records = f.audit();
    assert_eq!(
        records.len(),
        1,
        "the revoked connection is audited: {records:#?}"
    );
    assert_eq!(records[0]["reason"], "rule");
    assert_eq!(records[0]["source"]["pod"], "web");
    f.finish();
}
