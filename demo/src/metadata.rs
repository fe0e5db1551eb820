//! The demo's metadata-server section: the story of `deploy/examples/metadata` in a lab of
//! its own — only tenant-a may reach 169.254.169.254, and what it asks goes to a kube2iam-like
//! endpoint (which knows pods by their IP, as kube2iam does), path by path.

use std::collections::HashMap;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use super::Error;
use chokepoint_lab::http::{HttpExchange, exchange};
use chokepoint_lab::imds::{
    self, FakeKind, FakeMetadata, STORY_ENDPOINT, STORY_ROLE, access_key_id,
};
use chokepoint_lab::run::{Gateway, GatewayFiles};
use chokepoint_lab::{METADATA_IPV4, Topology};

const POLICY: (&str, &str) = (
    "cluster-network-policy.yaml",
    include_str!("../../deploy/examples/metadata/cluster-network-policy.yaml"),
);
const ROLE: &str = STORY_ROLE;
const ENDPOINT: SocketAddr = STORY_ENDPOINT;
const METADATA: SocketAddr = SocketAddr::new(IpAddr::V4(METADATA_IPV4), 80);
const CREDS: &str = "/latest/meta-data/iam/security-credentials/";

/// What a step expects the pod to see.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Expect {
    Status(u16),
    Reset,
}

struct Step {
    from: (&'static str, &'static str),
    method: &'static str,
    path: String,
    /// An IMDSv2 token is fetched first (`PUT /latest/api/token`) and sent along.
    with_token: bool,
    expect: Expect,
}

/// Runs the section; `Ok(true)` when every request went as expected.
pub(super) fn run(out: &mut impl Write, binary: &Path) -> Result<bool, Error> {
    writeln!(
        out,
        "\nMetadata server: deploy/examples/metadata: only tenant-a may reach 169.254.169.254; \
its allowed requests go to a kube2iam-like endpoint at {ENDPOINT} (metadata.mode: rewrite)"
    )?;
    let lab = imds::story(Topology::new().node_name("demo-node")).build()?;
    writeln!(
        out,
        "lab {}: node {} ({}), pods tenant-a/web (role {ROLE}) and tenant-b/web, metadata service {METADATA_IPV4}, kube2iam {ENDPOINT}",
        lab.prefix(),
        lab.node().name,
        lab.node_netns()
    )?;
    let pod_ip = |ns: &str| IpAddr::V4(lab.pod(ns, "web").expect("demo pod").ipv4);
    let roles = HashMap::from([(pod_ip("tenant-a"), ROLE.to_owned())]);
    let host_netns = |name: &str| lab.host(name).expect("demo host").netns.clone();
    let imds = FakeMetadata::start(
        &host_netns("metadata"),
        SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 80),
        FakeKind::Imds,
    )?;
    let kube2iam = FakeMetadata::start(
        &host_netns("kube2iam"),
        ENDPOINT,
        FakeKind::Kube2iam { roles },
    )?;
    let files = GatewayFiles::new(
        &lab,
        &[POLICY],
        "tproxy",
        &format!("metadata:\n  endpoint: http://{ENDPOINT}\n"),
    );
    let gateway = Gateway::start(&lab, &files, binary);

    let steps = [
        Step {
            from: ("tenant-a", "web"),
            method: "GET",
            path: format!("{CREDS}{ROLE}"),
            with_token: true,
            expect: Expect::Status(200),
        },
        Step {
            from: ("tenant-a", "web"),
            method: "GET",
            path: "/latest/user-data".into(),
            with_token: false,
            expect: Expect::Status(403),
        },
        Step {
            from: ("tenant-b", "web"),
            method: "GET",
            path: CREDS.into(),
            with_token: false,
            expect: Expect::Reset,
        },
    ];
    writeln!(
        out,
        "\n{:<14} {:<66} {:<9} OBSERVED",
        "FROM", "REQUEST", "EXPECTED"
    )?;
    let mut matched = 0;
    for step in &steps {
        let netns = lab
            .pod(step.from.0, step.from.1)
            .expect("demo pod")
            .netns
            .clone();
        let mut headers = String::new();
        let mut shown = format!("{} {}", step.method, step.path);
        if step.with_token {
            let token = send(
                &netns,
                "PUT",
                "/latest/api/token",
                "X-aws-ec2-metadata-token-ttl-seconds: 300\r\n",
            );
            if let Some(r) = token.responses.first().filter(|r| r.status == 200) {
                headers = format!("X-aws-ec2-metadata-token: {}\r\n", r.body);
                shown = format!("IMDSv2: {shown}");
            }
        }
        let x = send(&netns, step.method, &step.path, &headers);
        let (observed, label) = match x.responses.first() {
            Some(r) => (Expect::Status(r.status), describe(r.status, &r.body)),
            None if x.reset => (Expect::Reset, "reset (RST)".to_owned()),
            None => (Expect::Status(0), "no answer".to_owned()),
        };
        let expected = match step.expect {
            Expect::Status(s) => s.to_string(),
            Expect::Reset => "reset".to_owned(),
        };
        let ok = observed == step.expect;
        matched += usize::from(ok);
        writeln!(
            out,
            "{:<14} {:<66} {:<9} {label} {}",
            format!("{}/{}", step.from.0, step.from.1),
            shown,
            expected,
            if ok { "ok" } else { "MISMATCH" }
        )?;
    }
    writeln!(
        out,
        "\n{matched}/{} metadata requests as expected.",
        steps.len()
    )?;
    let seen = kube2iam.stop();
    writeln!(
        out,
        "kube2iam saw {} request(s), all from {} (the pod's own IP): it identifies the pod as it always does",
        seen.len(),
        pod_ip("tenant-a")
    )?;
    let all_from_pod = seen.iter().all(|s| s.peer.ip() == pod_ip("tenant-a"));
    drop(imds);

    let stopped = gateway.stop();
    let records = files.audit_lines();
    let audited = records.len();
    super::print_audit_and_clean_up(
        out,
        "the refused request and the refused connection",
        &records,
        lab,
        stopped,
    )?;
    Ok(matched == steps.len() && all_from_pod && audited == 2)
}

fn send(netns: &str, method: &str, path: &str, headers: &str) -> HttpExchange {
    let raw = format!(
        "{method} {path} HTTP/1.1\r\nHost: 169.254.169.254\r\n{headers}Connection: close\r\n\r\n"
    );
    exchange(netns, METADATA, raw.as_bytes(), Duration::from_secs(5))
}

/// The status and what the body says, briefly.
fn describe(status: u16, body: &str) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_str(body).ok();
    match parsed.as_ref().and_then(|v| v["AccessKeyId"].as_str()) {
        Some(key) => format!(
            "{status} credentials, AccessKeyId {key}{}",
            if key == access_key_id(ROLE) {
                ""
            } else {
                " (unexpected)"
            }
        ),
        None => format!("{status} {}", body.trim()),
    }
}
