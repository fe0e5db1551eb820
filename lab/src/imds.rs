//! Stand-ins for the metadata service and for a kube2iam-like credential endpoint, to run on a
//! lab host (in-process, on a thread whose sockets belong to the host's namespace).
//!
//! - [`FakeKind::Imds`] answers like EC2's instance metadata service: IMDSv2 tokens
//!   (`PUT /latest/api/token` with `X-aws-ec2-metadata-token-ttl-seconds` 1–21600; a request
//!   with `X-Forwarded-For` is refused as IMDS does; a wrong token is `401`), the node's own
//!   role and credentials, user-data, the identity document and the placement.
//! - [`FakeKind::Kube2iam`] answers like kube2iam: it knows pods **by source IP only** (the
//!   `roles` table it is given, as kube2iam's pod cache), lists and issues the credentials of
//!   that pod's role (`404` for an unknown IP, `403` for another role), issues IMDSv2 tokens,
//!   and answers any other path with `200 kube2iam: <path>` (kube2iam would proxy it).
//!
//! Every request is recorded ([`SeenRequest`]: the client address it saw, method, path,
//! headers), so tests can assert what reached the upstream and from which address.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use super::{HOST_C_IPV4, HostSpec, PodSpec, Topology, netns};

/// Which service to impersonate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FakeKind {
    Imds,
    /// Pod IP → role name.
    Kube2iam {
        roles: HashMap<IpAddr, String>,
    },
}

/// The role of tenant-a/web in [`story`].
pub const STORY_ROLE: &str = "app-reader";
/// Where [`story`]'s kube2iam-like host is meant to listen.
pub const STORY_ENDPOINT: SocketAddr = SocketAddr::new(IpAddr::V4(HOST_C_IPV4), 8181);

/// The lab of the `deploy/examples/metadata` story, added to `topology`: namespaces tenant-a
/// (`iam.amazonaws.com/allowed-roles: ["app-*"]`) and tenant-b, pods tenant-a/web (role
/// [`STORY_ROLE`], service account `web-sa`) and tenant-b/web (the same annotation; policy
/// keeps it away), the metadata host and a `kube2iam` host at [`STORY_ENDPOINT`]'s address.
pub fn story(topology: Topology) -> Topology {
    topology
        .namespace("tenant-a", [("tenant", "a")])
        .namespace("tenant-b", [("tenant", "b")])
        .namespace_annotation(
            "tenant-a",
            "iam.amazonaws.com/allowed-roles",
            r#"["app-*"]"#,
        )
        .pod(
            PodSpec::new("tenant-a", "web")
                .service_account("web-sa")
                .annotation("iam.amazonaws.com/role", STORY_ROLE),
        )
        .pod(PodSpec::new("tenant-b", "web").annotation("iam.amazonaws.com/role", STORY_ROLE))
        .host(HostSpec::metadata())
        .host(HostSpec::new("kube2iam", HOST_C_IPV4))
}

/// The role the fake IMDS gives the node.
pub const NODE_ROLE: &str = "lab-node-role";
/// What the fake IMDS serves as user-data (a secret pods must not see).
pub const USER_DATA: &str = "#!/bin/sh\nexport DB_PASSWORD=lab-user-data-secret\n";

/// The access key id a fake issues for `role`.
pub fn access_key_id(role: &str) -> String {
    format!("ASIALAB{}", role.to_uppercase().replace('-', ""))
}

/// One request as the fake saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRequest {
    pub peer: SocketAddr,
    pub method: String,
    pub path: String,
    /// Lower-case names, in arrival order.
    pub headers: Vec<(String, String)>,
}

impl SeenRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug)]
struct Shared {
    kind: FakeKind,
    seen: Mutex<Vec<SeenRequest>>,
    tokens: Mutex<Vec<String>>,
    next_token: AtomicU64,
}

/// A running fake; stopped on drop.
#[derive(Debug)]
pub struct FakeMetadata {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FakeMetadata {
    /// Binds `listen` inside `netns` and serves from a thread of its own.
    pub fn start(netns: &str, listen: SocketAddr, kind: FakeKind) -> io::Result<FakeMetadata> {
        let listener = netns::run_in(netns, || std::net::TcpListener::bind(listen))??;
        listener.set_nonblocking(true)?;
        let local_addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            kind,
            seen: Mutex::default(),
            tokens: Mutex::default(),
            next_token: AtomicU64::new(1),
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("fake-metadata {local_addr}"))
            .spawn(move || serve(listener, served, stopped))?;
        Ok(FakeMetadata {
            local_addr,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Every request seen so far.
    pub fn seen(&self) -> Vec<SeenRequest> {
        self.shared
            .seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn stop(mut self) -> Vec<SeenRequest> {
        self.shutdown();
        self.seen()
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for FakeMetadata {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn serve(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    runtime.block_on(async move {
        let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
            return;
        };
        loop {
            let (stream, peer) = tokio::select! {
                _ = &mut stopped => return,
                a = listener.accept() => match a {
                    Ok(a) => a,
                    Err(_) => continue,
                },
            };
            let shared = Arc::clone(&shared);
            tokio::spawn(async move {
                let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
                let service = hyper::service::service_fn(move |req| {
                    let shared = Arc::clone(&shared);
                    async move { Ok::<_, Infallible>(answer(&shared, peer, req)) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

fn respond(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r
}

fn credentials(role: &str, peer: IpAddr) -> String {
    serde_json::json!({
        "Code": "Success",
        "LastUpdated": "2026-11-22T10:00:00Z",
        "Type": "AWS-HMAC",
        "AccessKeyId": access_key_id(role),
        "SecretAccessKey": format!("lab-secret-for-{role}"),
        "Token": format!("lab-session-token-{role}-{peer}"),
        "Expiration": "2099-01-01T00:00:00Z",
    })
    .to_string()
}

fn answer(shared: &Shared, peer: SocketAddr, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let seen = SeenRequest {
        peer,
        method: req.method().to_string(),
        path: path.clone(),
        headers: req
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
    };
    shared
        .seen
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(seen.clone());

    let segments: Vec<&str> = path
        .trim_start_matches('/')
        .trim_end_matches('/')
        .split('/')
        .collect();
    if segments.get(1) == Some(&"api") && segments.get(2) == Some(&"token") {
        return token(shared, &seen, req.method());
    }
    if let Some(token) = seen.header("x-aws-ec2-metadata-token") {
        let known = shared
            .tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .any(|t| t == token);
        if !known {
            return respond(StatusCode::UNAUTHORIZED, "invalid token");
        }
    }
    let role = match &shared.kind {
        FakeKind::Imds => Some(NODE_ROLE.to_owned()),
        FakeKind::Kube2iam { roles } => roles.get(&peer.ip()).cloned(),
    };
    let credentials_path =
        segments.len() >= 4 && segments[1..4] == ["meta-data", "iam", "security-credentials"];
    if credentials_path {
        let Some(role) = role else {
            return respond(StatusCode::NOT_FOUND, "pod with specified IP not found");
        };
        return match segments.get(4) {
            None => respond(StatusCode::OK, role),
            Some(asked) if *asked == role => respond(StatusCode::OK, credentials(&role, peer.ip())),
            Some(_) => respond(StatusCode::FORBIDDEN, "Invalid role"),
        };
    }
    if matches!(shared.kind, FakeKind::Kube2iam { .. }) {
        return respond(StatusCode::OK, format!("kube2iam: {path}"));
    }
    match &segments[1..] {
        ["user-data"] => respond(StatusCode::OK, USER_DATA),
        ["dynamic", "instance-identity", "document"] => respond(
            StatusCode::OK,
            r#"{"accountId":"123456789012","instanceId":"i-0lab","region":"lab-region-1"}"#,
        ),
        ["meta-data", "placement", "region"] => respond(StatusCode::OK, "lab-region-1"),
        ["meta-data", "placement", "availability-zone"] => respond(StatusCode::OK, "lab-region-1a"),
        ["meta-data", "instance-id"] => respond(StatusCode::OK, "i-0lab"),
        _ => respond(StatusCode::NOT_FOUND, "not found"),
    }
}

fn token(shared: &Shared, seen: &SeenRequest, method: &Method) -> Response<Full<Bytes>> {
    if method != Method::PUT {
        return respond(StatusCode::METHOD_NOT_ALLOWED, "");
    }
    if seen.header("x-forwarded-for").is_some() {
        return respond(StatusCode::FORBIDDEN, "forwarded requests get no token");
    }
    let ttl = seen
        .header("x-aws-ec2-metadata-token-ttl-seconds")
        .and_then(|t| t.parse::<u32>().ok());
    if !ttl.is_some_and(|t| (1..=21_600).contains(&t)) {
        return respond(StatusCode::BAD_REQUEST, "missing or invalid TTL");
    }
    let n = shared.next_token.fetch_add(1, Ordering::Relaxed);
    let token = format!("lab-imds-token-{n}");
    shared
        .tokens
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(token.clone());
    let mut r = respond(StatusCode::OK, token);
    if let Ok(v) = hyper::header::HeaderValue::from_str(&ttl.unwrap_or(1).to_string()) {
        r.headers_mut()
            .insert("x-aws-ec2-metadata-token-ttl-seconds", v);
    }
    r
}
