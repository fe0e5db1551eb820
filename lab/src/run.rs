//! Running the real gateway in a lab: its working files (settings, policies, inventory, audit
//! log), the `chokepoint run` process in the node namespace, and traffic probes in pods and
//! hosts. Shared by the demo and the end-to-end suites.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::probe::{
    self, ServerHandle, TcpConnectArgs, TcpConnectReport, TcpServeArgs, TcpServeReport, TcpServer,
    UdpSendArgs, UdpSendReport, UdpServeArgs, UdpServeReport, UdpServer,
};
use super::{Lab, netns};

/// A scratch directory removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "chokepoint-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A gateway's working files: settings, policies, inventory and the audit log.
#[derive(Debug)]
pub struct GatewayFiles {
    pub dir: TempDir,
}

impl GatewayFiles {
    /// Writes the lab's inventory, the given policy files and a settings file capturing the
    /// lab's pod interfaces, with the audit log in a file. `extra` is appended to the
    /// settings (YAML, top-level keys not otherwise set here: e.g. `timeouts:`).
    ///
    /// Without a `dns:` section in `extra` the DNS proxy is off: its default upstream is the
    /// machine's own resolver, which a lab must never forward to. A lab that tests DNS passes
    /// `dns:` with an `upstream:` on one of its own hosts.
    pub fn new(
        lab: &Lab,
        policies: &[(&str, &str)],
        capture_mode: &str,
        extra: &str,
    ) -> GatewayFiles {
        let dir = TempDir::new("e2e");
        let p = dir.path();
        fs::create_dir_all(p.join("policies")).unwrap();
        for (name, text) in policies {
            fs::write(p.join("policies").join(name), text).unwrap();
        }
        fs::write(p.join("inventory.yaml"), lab.inventory_yaml()).unwrap();
        let dns_off = if extra.lines().any(|l| l.starts_with("dns:")) {
            ""
        } else {
            "dns:\n  enabled: false\n"
        };
        // `CHOKEPOINT_TEST_L4=proxy` runs a suite's TPROXY gateways on the proxy path (their
        // default is the kernel fast path); `kernel` names the default explicitly.
        let l4 = match std::env::var("CHOKEPOINT_TEST_L4") {
            Ok(v) if capture_mode == "tproxy" && !v.is_empty() => format!("\n  l4: {v}"),
            _ => String::new(),
        };
        let settings = format!(
            "node: {node}\ncapture:\n  mode: {capture_mode}{l4}\n  interfaces: [\"{iface}\"]\npolicy:\n  paths: [policies]\n  inventory: [inventory.yaml]\n  reloadInterval: 200ms\naudit:\n  sink: file\n  path: audit.log\n  dedupeWindow: 1s\ntimeouts:\n  drain: 2s\n{dns_off}{extra}",
            node = lab.node().name,
            iface = lab.pod_iface_pattern(),
        );
        fs::write(p.join("gateway.yaml"), settings).unwrap();
        GatewayFiles { dir }
    }

    pub fn settings(&self) -> PathBuf {
        self.dir.path().join("gateway.yaml")
    }

    /// Replaces a policy file (the gateway reloads on change).
    pub fn write_policy(&self, name: &str, text: &str) {
        let path = self.dir.path().join("policies").join(name);
        // Write then rename, as an editor or a ConfigMap update would: never a half file.
        let tmp = path.with_extension("tmp");
        fs::write(&tmp, text).unwrap();
        fs::rename(tmp, path).unwrap();
    }

    /// Appends YAML documents (each starting with `---`) to the inventory, e.g. the lab's
    /// Services ([`crate::kube_proxy::LabServices::inventory_yaml`]).
    pub fn append_inventory(&self, yaml: &str) {
        let path = self.dir.path().join("inventory.yaml");
        let mut text = fs::read_to_string(&path).unwrap();
        text.push('\n');
        text.push_str(yaml);
        fs::write(path, text).unwrap();
    }

    /// Every audit line written so far, as written.
    pub fn audit_lines(&self) -> Vec<String> {
        self.lines("audit.log")
    }

    /// Every audit record written so far.
    pub fn audit_records(&self) -> Vec<Value> {
        self.json_lines("audit.log")
    }

    /// Waits up to `timeout` for at least `n` audit records.
    pub fn wait_audit(&self, n: usize, timeout: Duration) -> Vec<Value> {
        self.wait_for("audit.log", timeout, |records| records.len() >= n)
    }

    /// Every line of the flow log written so far, when the settings write it to `flows.log`
    /// in this directory (`flows: {enabled: true, sink: file, path: flows.log}`).
    pub fn flow_records(&self) -> Vec<Value> {
        self.json_lines("flows.log")
    }

    /// Waits up to `timeout` until the flow log's lines satisfy `done`; returns them.
    pub fn wait_flows(&self, timeout: Duration, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        self.wait_for("flows.log", timeout, done)
    }

    /// The lines of a file in this directory (none when it does not exist yet).
    pub fn lines(&self, name: &str) -> Vec<String> {
        let text = fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        text.lines().map(str::to_owned).collect()
    }

    fn json_lines(&self, name: &str) -> Vec<Value> {
        self.lines(name)
            .iter()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("{name}: a line is not JSON ({e}): {l}"))
            })
            .collect()
    }

    fn wait_for(
        &self,
        name: &str,
        timeout: Duration,
        done: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let records = self.json_lines(name);
            if done(&records) || Instant::now() > deadline {
                return records;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The gateway running inside the lab's node namespace. Killed on drop.
#[derive(Debug)]
pub struct Gateway {
    child: Option<Child>,
    log: PathBuf,
}

impl Gateway {
    /// Starts `<binary> run` in the node namespace and waits until it logs `ready`.
    pub fn start(lab: &Lab, files: &GatewayFiles, binary: &Path) -> Gateway {
        let log = files.dir.path().join(format!(
            "gateway-{}.log",
            Instant::now().elapsed().as_nanos()
        ));
        let log_file = fs::File::create(&log).unwrap();
        let child = lab
            .command(lab.node_netns(), binary)
            .arg("run")
            .arg("--config")
            .arg(files.settings())
            .env("CHOKEPOINT_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("start chokepoint run");
        let mut gw = Gateway {
            child: Some(child),
            log,
        };
        gw.wait_for_log("ready", Duration::from_secs(20));
        gw
    }

    /// Waits until the log has a line containing `needle`; panics with the log otherwise.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log_text().lines().any(|l| l.contains(needle)) {
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "the gateway exited ({status}) before logging `{needle}`:\n{}",
                    self.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no `{needle}` in the gateway log after {timeout:?}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The gateway process's id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&mut self, signal: nix::sys::signal::Signal) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("gateway running");
        // `ip netns exec` execs the binary, so the child's pid is the gateway's.
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "the gateway did not exit after {signal}:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM: drain, remove the rules, exit 0.
    pub fn stop(mut self) -> std::process::ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGTERM)
    }

    /// SIGKILL: the rules stay (fail closed).
    pub fn kill(mut self) {
        self.signal(nix::sys::signal::Signal::SIGKILL);
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An echo server in a lab namespace (see [`probe`]).
pub fn tcp_server(netns: &str, listen: SocketAddr) -> ServerHandle<TcpServeReport> {
    netns::run_in(netns, || TcpServer::bind(&TcpServeArgs::new(listen)))
        .expect("enter netns")
        .expect("bind tcp server")
        .spawn()
        .expect("spawn tcp server")
}

pub fn udp_server(netns: &str, listen: SocketAddr) -> ServerHandle<UdpServeReport> {
    netns::run_in(netns, || UdpServer::bind(&UdpServeArgs::new(listen)))
        .expect("enter netns")
        .expect("bind udp server")
        .spawn()
        .expect("spawn udp server")
}

/// Connects from a lab namespace, sends `bytes` and checks the echo.
pub fn tcp_connect(netns: &str, to: SocketAddr, bytes: u64, timeout: Duration) -> TcpConnectReport {
    let args = TcpConnectArgs::new(to, bytes).timeout_ms(timeout.as_millis() as u64);
    netns::run_in(netns, || probe::tcp_connect(&args)).expect("enter netns")
}

/// A connection from a lab namespace to one of the echo servers, held open after the
/// server's greeting line was read (reads time out after 5 s).
#[derive(Debug)]
pub struct HeldConnection(std::io::BufReader<std::net::TcpStream>);

impl HeldConnection {
    pub fn open(netns: &str, to: SocketAddr) -> HeldConnection {
        let stream = netns::run_in(netns, || {
            std::net::TcpStream::connect_timeout(&to, Duration::from_secs(5))
        })
        .expect("enter netns")
        .unwrap_or_else(|e| panic!("connect to {to}: {e}"));
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("read timeout");
        let mut reader = std::io::BufReader::new(stream);
        let mut line = String::new();
        std::io::BufRead::read_line(&mut reader, &mut line).expect("the server's greeting");
        HeldConnection(reader)
    }

    /// Reads until the connection ends: `Ok(0)` for a close, the error for a reset (or for
    /// the read timeout when neither came).
    pub fn read_to_end(&mut self) -> std::io::Result<usize> {
        std::io::Read::read_to_end(&mut self.0, &mut Vec::new())
    }
}

pub fn udp_send(netns: &str, to: SocketAddr, timeout: Duration) -> UdpSendReport {
    let args = UdpSendArgs::new(to).timeout_ms(timeout.as_millis() as u64);
    netns::run_in(netns, || probe::udp_send(&args)).expect("enter netns")
}

/// An HTTP GET on the node namespace's loopback (the admin endpoint); returns status and body.
pub fn admin_get(lab: &Lab, path: &str) -> (u16, String) {
    let path = path.to_owned();
    netns::run_in(lab.node_netns(), move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect_timeout(
            &"127.0.0.1:15000".parse().unwrap(),
            Duration::from_secs(2),
        )?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok::<_, std::io::Error>(out)
    })
    .expect("enter netns")
    .map(|resp| {
        let status = resp
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = resp
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    })
    .unwrap_or((0, String::new()))
}

/// `nft list table inet chokepoint` inside a namespace, if the table exists.
pub fn nft_table(netns: &str) -> Option<String> {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            netns,
            "nft",
            "list",
            "table",
            "inet",
            "chokepoint",
        ])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}
