//! Real programs as lab services and clients, for the DNS and FQDN stories:
//!
//! - [`Dnsmasq`]: Debian's dnsmasq as the canonical upstream DNS server on an outside host,
//!   authoritative for the test zones of a [`Zone`] and forwarding nowhere;
//! - [`WebServer`]: a small HTTP or HTTPS server (Python's `http.server`, with a self-signed
//!   [`Certificate`] from `openssl`) on an outside host, answering `<server name> host=<Host>`;
//! - [`dig`] and [`curl`], run inside a pod namespace. `curl` resolves names with the pod's
//!   own resolver: its `/etc/resolv.conf` is bind-mounted over in the private mount namespace
//!   that `ip netns exec` gives each command, so nothing outside that process changes.
//!
//! Every server is a child process, killed on drop; its files live in a directory the caller
//! owns. The programs come from `scripts/setup.sh` (dnsmasq-base, bind9-dnsutils, curl,
//! openssl, python3).

use std::fmt::Write as _;
use std::fs;
use std::io::{self, BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Error, netns};

/// What a [`Dnsmasq`] answers from: its own records, or (with [`Zone::forward_to`]) another
/// server.
#[derive(Debug, Clone)]
pub struct Zone {
    lines: Vec<String>,
    log_queries: bool,
}

impl Default for Zone {
    fn default() -> Zone {
        Zone {
            lines: Vec::new(),
            log_queries: true,
        }
    }
}

impl Zone {
    pub fn new() -> Zone {
        Zone::default()
    }

    /// Forward every query to `upstream` without caching: dnsmasq as a plain forwarder (the
    /// peer the DNS proxy is measured against).
    pub fn forward_to(mut self, upstream: SocketAddr) -> Zone {
        self.lines
            .push(format!("server={}#{}", upstream.ip(), upstream.port()));
        self.lines.push("cache-size=0".into());
        self
    }

    /// Do not log every query (for load tests; logging costs dnsmasq time).
    pub fn quiet(mut self) -> Zone {
        self.log_queries = false;
        self
    }

    /// `name` resolves to each of `ips` (A/AAAA) with this TTL.
    pub fn host(mut self, name: &str, ips: &[IpAddr], ttl: u32) -> Zone {
        // One record per line: dnsmasq takes at most one address per family per line.
        for ip in ips {
            self.lines.push(format!("host-record={name},{ip},{ttl}"));
        }
        self
    }

    /// `alias` is a CNAME for `target` (which must be served here too).
    pub fn cname(mut self, alias: &str, target: &str, ttl: u32) -> Zone {
        self.lines.push(format!("cname={alias},{target},{ttl}"));
        self
    }

    /// `name` has a record of type `rr_type` (a number) whose data is `hex` (e.g. an HTTPS
    /// record, type 65, which dnsmasq has no syntax for).
    pub fn raw_record(mut self, name: &str, rr_type: u16, hex: &str) -> Zone {
        self.lines.push(format!("dns-rr={name},{rr_type},{hex}"));
        self
    }

    /// Queries for `domain` and every name under it are forwarded to `server` (port 53), and
    /// its answers passed on as they came: a forwarder in front of another zone's server.
    pub fn delegate(mut self, domain: &str, server: IpAddr) -> Zone {
        self.lines.push(format!("server=/{domain}/{server}"));
        self
    }

    /// `domain` and every name under it resolve to `ip` (a wildcard), with the server's
    /// `local-ttl`.
    pub fn wildcard(mut self, domain: &str, ip: IpAddr) -> Zone {
        self.lines.push(format!("address=/{domain}/{ip}"));
        self
    }
}

/// dnsmasq serving a [`Zone`] on port 53 (UDP and TCP) of one address in a lab namespace.
#[derive(Debug)]
pub struct Dnsmasq {
    child: Option<Child>,
    pub addr: SocketAddr,
    log: PathBuf,
}

impl Dnsmasq {
    /// Starts dnsmasq in `netns` on `listen:53` with `zone`; waits until it accepts TCP
    /// connections. `local_ttl` is the TTL of wildcard answers. Files go to `dir`.
    pub fn start(
        netns: &str,
        listen: IpAddr,
        zone: &Zone,
        local_ttl: u32,
        dir: &Path,
    ) -> Result<Dnsmasq, Error> {
        let conf = dir.join(format!("dnsmasq-{listen}.conf"));
        let log = dir.join(format!("dnsmasq-{listen}.log"));
        let mut text = String::new();
        // Authoritative for what the zone lists, forwarding nowhere, reading no host files.
        let _ = writeln!(
            text,
            "no-resolv\nno-hosts\nno-poll\nbind-interfaces\nlisten-address={listen}\nport=53\n\
             local-ttl={local_ttl}\nuser=root\ngroup=root\npid-file={}\nlog-facility={}",
            dir.join(format!("dnsmasq-{listen}.pid")).display(),
            log.display()
        );
        if zone.log_queries {
            let _ = writeln!(text, "log-queries");
        }
        for line in &zone.lines {
            let _ = writeln!(text, "{line}");
        }
        fs::write(&conf, text).map_err(Error::io(format!("writing {}", conf.display())))?;
        let child = netns::command(netns, "dnsmasq")
            .arg("--keep-in-foreground")
            .arg(format!("--conf-file={}", conf.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(Error::io(
                "starting dnsmasq (install dnsmasq-base, see scripts/setup.sh)",
            ))?;
        let addr = SocketAddr::new(listen, 53);
        let mut server = Dnsmasq {
            child: Some(child),
            addr,
            log,
        };
        server.wait_listening(netns)?;
        Ok(server)
    }

    fn wait_listening(&mut self, ns: &str) -> Result<(), Error> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let addr = self.addr;
        loop {
            let up = netns::run_in(ns, move || {
                std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            })
            .map_err(Error::io("entering the DNS host's namespace"))?;
            if up {
                return Ok(());
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                let stderr = self.stop_and_stderr();
                return Err(Error::Command {
                    command: format!("dnsmasq on {addr}"),
                    status: exited.map_or("not listening after 10s".into(), |s| s.to_string()),
                    stderr,
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop_and_stderr(&mut self) -> String {
        let Some(mut child) = self.child.take() else {
            return String::new();
        };
        let _ = child.kill();
        let out = child.wait_with_output().ok();
        out.map(|o| String::from_utf8_lossy(&o.stderr).trim().to_owned())
            .unwrap_or_default()
    }

    /// The queries dnsmasq logged so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the server (the upstream goes down).
    pub fn stop(mut self) {
        self.stop_and_stderr();
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.stop_and_stderr();
    }
}

/// A self-signed certificate (and its key) for a set of DNS names.
#[derive(Debug, Clone)]
pub struct Certificate {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Certificate {
    /// Makes a P-256 certificate valid for `names` with `openssl req`, in `dir`.
    pub fn self_signed(names: &[&str], dir: &Path) -> Result<Certificate, Error> {
        let cert = dir.join("lab-cert.pem");
        let key = dir.join("lab-key.pem");
        let san = names
            .iter()
            .map(|n| format!("DNS:{n}"))
            .collect::<Vec<_>>()
            .join(",");
        let out = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .arg("ec_paramgen_curve:prime256v1")
            .args(["-nodes", "-days", "2", "-subj", "/CN=chokepoint lab"])
            .arg("-addext")
            .arg(format!("subjectAltName={san}"))
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stdin(Stdio::null())
            .output()
            .map_err(Error::io("running openssl (see scripts/setup.sh)"))?;
        if !out.status.success() {
            return Err(Error::Command {
                command: "openssl req -x509".into(),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(Certificate { cert, key })
    }
}

/// Python's `http.server`, answering every GET with `<name> host=<Host header>\n`; HTTPS
/// when given a certificate.
const WEB_SERVER: &str = r#"
import http.server, socketserver, ssl, sys
name, addr, port, cert, key = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = ("%s host=%s\n" % (name, self.headers.get("Host", ""))).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    def server_bind(self):
        # HTTPServer would look its own address up in DNS (getfqdn): no lookups from the lab.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]
server = Server((addr, port), Handler)
if cert:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
print("listening", flush=True)
server.serve_forever()
"#;

/// An HTTP(S) server in a lab namespace; killed on drop.
#[derive(Debug)]
pub struct WebServer {
    child: Child,
    pub addr: SocketAddr,
}

impl WebServer {
    /// Starts a server named `name` on `addr` in `netns`; HTTPS with `tls`.
    pub fn start(
        netns: &str,
        addr: SocketAddr,
        name: &str,
        tls: Option<&Certificate>,
    ) -> Result<WebServer, Error> {
        let (cert, key) = match tls {
            Some(c) => (c.cert.display().to_string(), c.key.display().to_string()),
            None => (String::new(), String::new()),
        };
        let mut child = netns::command(netns, "python3")
            .arg("-c")
            .arg(WEB_SERVER)
            .arg(name)
            .arg(addr.ip().to_string())
            .arg(addr.port().to_string())
            .arg(cert)
            .arg(key)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(Error::io("starting python3 (see scripts/setup.sh)"))?;
        let mut line = String::new();
        let read = child
            .stdout
            .take()
            .map(|out| BufReader::new(out).read_line(&mut line));
        if !matches!(read, Some(Ok(n)) if n > 0) || line.trim() != "listening" {
            let _ = child.kill();
            let stderr = child
                .wait_with_output()
                .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_owned())
                .unwrap_or_default();
            return Err(Error::Command {
                command: format!("web server {name} on {addr}"),
                status: "did not start".into(),
                stderr,
            });
        }
        Ok(WebServer { child, addr })
    }
}

impl Drop for WebServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What `dig` said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigAnswer {
    /// `NOERROR`, `SERVFAIL`, `NXDOMAIN`, …; empty when no answer came at all.
    pub status: String,
    /// The header flags (`qr`, `aa`, `tc`, …).
    pub flags: Vec<String>,
    /// The A and AAAA addresses of the answer section, in order.
    pub addresses: Vec<IpAddr>,
    /// The CNAME targets of the answer section, in order (lower case, no trailing dot).
    pub cnames: Vec<String>,
    /// dig's whole output.
    pub output: String,
}

/// `dig @server name [args…]` in `netns`, one try with a 5 s timeout unless `args` say
/// otherwise.
pub fn dig(netns: &str, server: IpAddr, name: &str, args: &[&str]) -> DigAnswer {
    let out = netns::command(netns, "dig")
        .arg(format!("@{server}"))
        .arg(name)
        .args(["+time=5", "+tries=1"])
        .args(args)
        .stdin(Stdio::null())
        .output();
    let output = match out {
        Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
        Err(e) => format!("dig could not run (see scripts/setup.sh): {e}"),
    };
    parse_dig(&output)
}

fn parse_dig(output: &str) -> DigAnswer {
    let mut answer = DigAnswer {
        status: String::new(),
        flags: Vec::new(),
        addresses: Vec::new(),
        cnames: Vec::new(),
        output: output.to_owned(),
    };
    let mut in_answer = false;
    for line in output.lines() {
        if let Some(rest) = line.split_once("status: ").map(|(_, r)| r) {
            answer.status = rest.split(',').next().unwrap_or("").trim().to_owned();
        } else if let Some(rest) = line.strip_prefix(";; flags: ") {
            let flags = rest.split(';').next().unwrap_or("");
            answer.flags = flags.split_whitespace().map(str::to_owned).collect();
        } else if line.starts_with(";; ANSWER SECTION") {
            in_answer = true;
        } else if line.is_empty() {
            in_answer = false;
        } else if in_answer && !line.starts_with(';') {
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields.as_slice() {
                [_, _, _, "A" | "AAAA", ip, ..] => {
                    if let Ok(ip) = ip.parse() {
                        answer.addresses.push(ip);
                    }
                }
                [_, _, _, "CNAME", target, ..] => answer
                    .cnames
                    .push(target.trim_end_matches('.').to_ascii_lowercase()),
                _ => {}
            }
        }
    }
    answer
}

/// What `curl` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurlResult {
    /// curl's exit code (0: a response came; 6: name not resolved; 7: connection refused;
    /// 35/56: the connection was reset during the TLS handshake or the transfer; 28: timeout).
    pub exit: i32,
    /// The HTTP status (0 without a response).
    pub status: u16,
    pub body: String,
    pub stderr: String,
}

/// `curl` in `netns` with `resolv_conf` as its `/etc/resolv.conf`; `args` are curl's (the
/// URL among them). At most 10 s.
pub fn curl(netns: &str, resolv_conf: &Path, args: &[&str]) -> CurlResult {
    const STATUS_MARK: &str = "\n--curl-status:";
    // `ip netns exec` runs each command in a private mount namespace: the bind mount is seen
    // by this curl only and disappears with it.
    let out = netns::command(netns, "sh")
        .arg("-c")
        .arg(r#"mount --bind "$0" /etc/resolv.conf && exec curl "$@""#)
        .arg(resolv_conf)
        .args(["-sS", "--max-time", "10", "-w"])
        .arg(format!("{STATUS_MARK}%{{http_code}}"))
        .args(args)
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(o) => {
            let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
            let (body, status) = stdout.rsplit_once(STATUS_MARK).unwrap_or((&stdout, "0"));
            CurlResult {
                exit: o.status.code().unwrap_or(-1),
                status: status.trim().parse().unwrap_or(0),
                body: body.to_owned(),
                stderr: String::from_utf8_lossy(&o.stderr).trim().to_owned(),
            }
        }
        Err(e) => CurlResult {
            exit: -1,
            status: 0,
            body: String::new(),
            stderr: format!("curl could not run (see scripts/setup.sh): {e}"),
        },
    }
}

/// Writes a resolv.conf naming `server` into `dir` and returns its path.
pub fn resolv_conf(dir: &Path, server: IpAddr) -> io::Result<PathBuf> {
    let path = dir.join(format!("resolv-{server}.conf"));
    fs::write(
        &path,
        format!("nameserver {server}\noptions timeout:3 attempts:1\n"),
    )?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dig_output_is_parsed() {
        let out = "\
; <<>> DiG 9.18 <<>> @10.96.0.10 www.shop.test
;; global options: +cmd
;; Got answer:
;; ->>HEADER<<- opcode: QUERY, status: NOERROR, id: 4242
;; flags: qr aa rd ra tc; QUERY: 1, ANSWER: 3, AUTHORITY: 0, ADDITIONAL: 1

;; QUESTION SECTION:
;www.shop.test.			IN	A

;; ANSWER SECTION:
www.shop.test.		60	IN	CNAME	Edge.CDN.test.
edge.cdn.test.		60	IN	A	192.0.2.10
edge.cdn.test.		60	IN	AAAA	2001:db8::10

;; Query time: 1 msec
";
        let a = parse_dig(out);
        assert_eq!(a.status, "NOERROR");
        assert_eq!(a.flags, ["qr", "aa", "rd", "ra", "tc"]);
        assert_eq!(
            a.addresses,
            [
                "192.0.2.10".parse::<IpAddr>().unwrap(),
                "2001:db8::10".parse().unwrap()
            ]
        );
        assert_eq!(a.cnames, ["edge.cdn.test"]);
        let none = parse_dig(";; communications error: timed out\n");
        assert_eq!(none.status, "");
        assert!(none.addresses.is_empty());
    }

    #[test]
    fn zone_lines_are_dnsmasq_options() {
        let z = Zone::new()
            .host(
                "a.test",
                &["192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap()],
                30,
            )
            .cname("www.test", "a.test", 30)
            .wildcard("apps.test", "192.0.2.3".parse().unwrap());
        assert_eq!(
            z.lines,
            [
                "host-record=a.test,192.0.2.1,30",
                "host-record=a.test,192.0.2.2,30",
                "cname=www.test,a.test,30",
                "address=/apps.test/192.0.2.3",
            ]
        );
    }
}
