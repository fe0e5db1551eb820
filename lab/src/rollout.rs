//! The safe-rollout story in a lab of its own, shared by the demo (which prints it) and the
//! end-to-end suite (which asserts it): tenant-a's pod resolves `api.example.test` (site-a)
//! through the gateway's DNS proxy and connects to it by name, and to site-b by address,
//! while the flow log is on and a Baseline deny of everything is staged. Site-c is the
//! destination nobody used.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::probe::{ServerHandle, TcpConnectReport, TcpServeReport};
use crate::run::{Gateway, GatewayFiles, admin_get, tcp_connect, tcp_server};
use crate::services::{DigAnswer, Dnsmasq, Zone, dig};
use crate::{Error, HOST_A_IPV4, HOST_B_IPV4, HOST_C_IPV4, HostSpec, Lab, PodSpec, Topology};

/// Where pods send DNS (captured by the gateway; nothing owns it).
pub const CLUSTER_DNS: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
pub const UPSTREAM: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 53);
/// Site-a's name.
pub const SITE_A_NAME: &str = "api.example.test";
/// Not one of `fqdn.httpPorts`: a raw TCP client that shows no name passes a check by name.
pub const ECHO: u16 = 7000;
pub const SITE_A: SocketAddr = SocketAddr::new(IpAddr::V4(HOST_A_IPV4), ECHO);
pub const SITE_B: SocketAddr = SocketAddr::new(IpAddr::V4(HOST_B_IPV4), ECHO);
pub const SITE_C: SocketAddr = SocketAddr::new(IpAddr::V4(HOST_C_IPV4), ECHO);
/// The staged deny's rule, as records name it.
pub const DENY_RULE: &str = "deny-everything-else";

/// The Baseline deny of everything, `staged` or `enforced`.
pub fn baseline(mode: &str) -> String {
    format!(
        "\
apiVersion: policy.networking.k8s.io/v1alpha1
kind: BaselineAdminNetworkPolicy
metadata:
  name: default
  annotations: {{policy.chokepoint.dev/mode: {mode}}}
spec:
  subject: {{namespaces: {{}}}}
  egress:
  - name: {DENY_RULE}
    action: Deny
    to: [{{networks: [0.0.0.0/0]}}]
"
    )
}

impl std::fmt::Debug for Story {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Story")
            .field("lab", &self.lab.prefix())
            .field("gateway", &self.gateway)
            .finish_non_exhaustive()
    }
}

/// What a command printed.
struct Ran {
    stdout: String,
    stderr: String,
}

/// What the pod's traffic did.
#[derive(Debug)]
pub struct Traffic {
    pub dns: DigAnswer,
    pub site_a: TcpConnectReport,
    pub site_b: TcpConnectReport,
}

impl Traffic {
    /// The name resolved to site-a and both connections echoed.
    pub fn worked(&self) -> bool {
        self.dns.status == "NOERROR"
            && self.dns.addresses == [IpAddr::from(HOST_A_IPV4)]
            && self.site_a.echo_ok
            && self.site_b.echo_ok
    }
}

/// The running story: servers, the gateway and the lab. Dropped (and cleaned up) in that
/// order.
pub struct Story {
    servers: Vec<ServerHandle<TcpServeReport>>,
    dnsmasq: Option<Dnsmasq>,
    pub gateway: Option<Gateway>,
    pub files: GatewayFiles,
    pub lab: Lab,
}

impl Story {
    /// Builds the lab and starts the gateway `binary` with the flow log on (window 1 s,
    /// namespace tenant-a) and the deny staged.
    pub fn start(node: &str, binary: &Path) -> Result<Story, Error> {
        let lab = Topology::new()
            .node_name(node)
            .namespace("tenant-a", [("tenant", "a")])
            .pod(PodSpec::new("tenant-a", "web").label("app", "web"))
            .host(HostSpec::new("dns", UPSTREAM))
            .host(HostSpec::new("site-a", HOST_A_IPV4))
            .host(HostSpec::new("site-b", HOST_B_IPV4))
            .host(HostSpec::new("site-c", HOST_C_IPV4))
            .build()?;
        let extra = format!(
            "dns:\n  upstream: {UPSTREAM}\nflows:\n  enabled: true\n  sink: file\n  path: flows.log\n  window: 1s\n  namespaces: [tenant-a]\n"
        );
        let files = GatewayFiles::new(
            &lab,
            &[("baseline.yaml", &baseline("staged"))],
            "tproxy",
            &extra,
        );
        let host = |name: &str| lab.host(name).expect("story host").netns.clone();
        let zone = Zone::new().host(SITE_A_NAME, &[IpAddr::from(HOST_A_IPV4)], 300);
        let dnsmasq = Dnsmasq::start(&host("dns"), UPSTREAM.into(), &zone, 60, files.dir.path())?;
        let servers = vec![
            tcp_server(&host("site-a"), SITE_A),
            tcp_server(&host("site-b"), SITE_B),
            tcp_server(&host("site-c"), SITE_C),
        ];
        let gateway = Gateway::start(&lab, &files, binary);
        Ok(Story {
            servers,
            dnsmasq: Some(dnsmasq),
            gateway: Some(gateway),
            files,
            lab,
        })
    }

    fn pod(&self) -> String {
        self.lab
            .pod("tenant-a", "web")
            .expect("story pod")
            .netns
            .clone()
    }

    /// The pod's usual traffic: resolve site-a, connect to it, connect to site-b.
    pub fn traffic(&self) -> Traffic {
        let pod = self.pod();
        Traffic {
            dns: dig(&pod, CLUSTER_DNS.into(), SITE_A_NAME, &[]),
            site_a: tcp_connect(&pod, SITE_A, 512, Duration::from_secs(10)),
            site_b: tcp_connect(&pod, SITE_B, 512, Duration::from_secs(10)),
        }
    }

    /// A connection to site-c, which nobody used while the flows were observed.
    pub fn unobserved(&self) -> TcpConnectReport {
        tcp_connect(&self.pod(), SITE_C, 16, Duration::from_secs(5))
    }

    /// Runs `binary recommend` over the flow and audit logs, for tenant-a: the YAML, or the
    /// command's error output.
    pub fn recommend(&self, binary: &Path) -> Result<String, String> {
        let args = [
            "--flows",
            "flows.log",
            "audit.log",
            "--namespace",
            "tenant-a",
        ];
        self.run(Command::new(binary).arg("recommend").args(args), binary)
            .map(|out| out.stdout)
    }

    /// Runs `binary map` over the flow and audit logs, the policies and the inventory, writing
    /// the page to `out`: the command's summary, or its error output.
    pub fn map(&self, binary: &Path, out: &Path) -> Result<String, String> {
        let args = [
            "--flows",
            "flows.log",
            "audit.log",
            "--policies",
            "policies",
        ];
        let mut command = Command::new(binary);
        command
            .arg("map")
            .args(args)
            .args(["--inventory", "inventory.yaml", "-o"])
            .arg(out);
        self.run(&mut command, binary)
            .map(|out| out.stderr.trim().to_owned())
    }

    /// Runs `command` in the story's directory: its output on success, its error output
    /// otherwise.
    fn run(&self, command: &mut Command, binary: &Path) -> Result<Ran, String> {
        let out = command
            .current_dir(self.files.dir.path())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
        let ran = Ran {
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        if out.status.success() {
            Ok(ran)
        } else {
            Err(ran.stderr)
        }
    }

    /// Runs `binary status` against the gateway's admin endpoint (in the node namespace): the
    /// table it prints, or its error output.
    pub fn status(&self, binary: &Path) -> Result<String, String> {
        let mut command = self.lab.command(self.lab.node_netns(), binary);
        command.args(["status", "--admin", "127.0.0.1:15000"]);
        self.run(&mut command, binary).map(|out| out.stdout)
    }

    /// Applies `recommended` and switches the deny to enforced; returns once the gateway's
    /// snapshot has both (`/config_dump`), or `false` after 10 s.
    pub fn enforce(&self, recommended: &str) -> bool {
        self.files.write_policy("recommended.yaml", recommended);
        self.files
            .write_policy("baseline.yaml", &baseline("enforced"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let (_, body) = admin_get(&self.lab, "/config_dump");
            let dump: Value = serde_json::from_str(&body).unwrap_or_default();
            let s = &dump["snapshot"];
            if s["developer_policies"].as_u64() > Some(0)
                && s["cluster_policies"] == 1
                && s["staged_policies"] == 0
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Stops the servers, the gateway (SIGTERM: its logs are flushed) and DNS; the lab
    /// stays for the caller to tear down.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        for s in self.servers.drain(..) {
            let _ = s.stop();
        }
        self.dnsmasq.take();
        self.gateway.take().map(Gateway::stop)
    }
}

/// Audit records: does the staged deny break a flow to `ip`:`port` (an allowed record with
/// a staged deny by [`DENY_RULE`])?
pub fn staged_deny_of(records: &[Value], ip: &str, port: u16) -> bool {
    records.iter().any(|r| {
        r["verdict"] == "allow"
            && r["destination"]["ip"] == ip
            && r["destination"]["port"] == port
            && r["staged"]["verdict"] == "deny"
            && r["staged"]["decided_by"]["rule"] == DENY_RULE
    })
}
