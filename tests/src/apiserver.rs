//! A test API server of our own that speaks the Kubernetes list/watch protocol over real HTTP,
//! so that the real kube client and kube-runtime watcher code paths run against it.
//!
//! What it does, as the real one does:
//! * `GET <collection>` lists (`limit`/`continue` paging; `metadata.resourceVersion` of the
//!   List is the current version). An expired `continue` token answers HTTP 410.
//! * `GET <collection>?watch=1&resourceVersion=N` streams newline-delimited
//!   `{"type": ADDED|MODIFIED|DELETED|BOOKMARK|ERROR, "object": …}` events after N, with
//!   periodic BOOKMARKs when `allowWatchBookmarks=true`; a version older than the compaction
//!   horizon answers an ERROR event carrying a `Status` with `code: 410`, reason `Expired`.
//! * A kind that is not installed (a missing CRD) answers 404 with a `Status`.
//! * Events (`events.k8s.io/v1`) can be created and patched; they are recorded.
//! * `metadata.generation` is 1 on creation and grows when anything but metadata and status
//!   changes. Kinds with a status subresource (DeveloperNetworkPolicy) keep their status
//!   when [`ApiServer::apply`] gives none, and take a merge patch (PATCH) or a replacement
//!   (PUT) of `…/NAME/status`, which changes no generation; those writes are recorded with
//!   who made them ([`ApiServer::status_writes`]).
//! * Leases (`coordination.k8s.io/v1`): get, create (409 AlreadyExists), update (409
//!   Conflict unless `metadata.resourceVersion` is the current one).
//! * Clients are told apart by their bearer token ([`ApiServer::client_as`]), as the real
//!   server tells apart users.
//! * [`ApiServer::stop`] drops every connection and closes the port; [`ApiServer::start`]
//!   comes back on the same port (a restart). [`ApiServer::compact`] forgets history;
//!   [`ApiServer::expire_watches`] ends every open watch with a 410.
//!
//! One resourceVersion counter for all kinds, as etcd has. Not implemented: label and field
//! selectors, consistent snapshots across list pages (pages are cut from the current state).

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chokepoint_config::kube::WATCHED;
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinSet;

/// One change, as watchers see it.
#[derive(Debug, Clone)]
struct Change {
    path: String,
    rv: u64,
    kind: &'static str,
    object: Value,
    /// When the server applied it (for event → snapshot latency).
    at: Instant,
}

#[derive(Debug, Clone)]
enum Signal {
    Change(Arc<Change>),
    /// End every watch with a 410 ERROR event.
    Expire,
}

#[derive(Debug, Default)]
struct Collection {
    objects: BTreeMap<(String, String), Value>,
    history: Vec<Arc<Change>>,
}

#[derive(Debug, Default)]
struct State {
    rv: u64,
    /// Watches from an older version get 410.
    compacted: u64,
    /// Installed kinds by collection path; a path not here answers 404.
    collections: HashMap<String, Collection>,
    /// Collection path → kind name and apiVersion.
    kinds: HashMap<String, (String, String)>,
    events: Vec<Value>,
    /// (namespace, name) → Lease.
    leases: BTreeMap<(String, String), Value>,
    status_writes: Vec<StatusWrite>,
    lists: HashMap<String, u64>,
    watches: HashMap<String, u64>,
    uid: u64,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    signals: broadcast::Sender<Signal>,
    bookmark_every: Duration,
}

/// One write of an object's status subresource.
#[derive(Debug, Clone)]
pub struct StatusWrite {
    /// The bearer token of the client that wrote it (empty: none).
    pub client: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// The status after the write.
    pub status: Value,
}

/// The kinds whose status is a subresource (written only through `…/status`).
fn has_status_subresource(kind: &str) -> bool {
    kind == chokepoint_config::api::developer::KIND
}

/// The server; see the module doc.
#[derive(Debug)]
pub struct ApiServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    running: Mutex<Option<JoinSet<()>>>,
    /// While stopped: a bound, non-listening socket holding the port, so that no other
    /// socket of the machine (an outgoing connection's ephemeral port) takes it before
    /// [`ApiServer::start`] binds it again.
    reserved: Mutex<Option<TcpSocket>>,
}

/// A socket on `addr` that shares the port (`SO_REUSEPORT`) with the server's other
/// sockets, the listener and the reservation.
fn port_socket(addr: SocketAddr) -> TcpSocket {
    let socket = TcpSocket::new_v4().expect("a TCP socket");
    socket.set_reuseaddr(true).expect("SO_REUSEADDR");
    socket.set_reuseport(true).expect("SO_REUSEPORT");
    socket.bind(addr).expect("bind the server's port");
    socket
}

fn listen(addr: SocketAddr) -> TcpListener {
    port_socket(addr).listen(1024).expect("listen")
}

fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    shared.state.lock().unwrap_or_else(|e| e.into_inner())
}

impl ApiServer {
    /// Serves every kind Chokepoint watches except the optional (CRD) kinds not in
    /// `crds` (by kind name), on a free loopback port.
    pub async fn start_new(crds: &[&str]) -> ApiServer {
        let mut state = State::default();
        for k in WATCHED {
            state
                .kinds
                .insert(k.path(), (k.kind.to_owned(), k.api_version()));
            if !k.optional || crds.contains(&k.kind) {
                state.collections.insert(k.path(), Collection::default());
            }
        }
        let (signals, _) = broadcast::channel(1 << 16);
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            signals,
            bookmark_every: Duration::from_millis(200),
        });
        let listener = listen("127.0.0.1:0".parse().expect("an address"));
        let addr = listener.local_addr().expect("local addr");
        let server = ApiServer {
            shared,
            addr,
            running: Mutex::new(None),
            reserved: Mutex::new(None),
        };
        server.serve(listener);
        server
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kube client for this server.
    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(self.url().parse().expect("server URL"));
        kube::Client::try_from(config).expect("kube client")
    }

    /// A kube client for this server that identifies itself as `who` (a bearer token).
    pub fn client_as(&self, who: &str) -> kube::Client {
        let mut config = kube::Config::new(self.url().parse().expect("server URL"));
        config.headers.push((
            hyper::header::AUTHORIZATION,
            format!("Bearer {who}").parse().expect("a header value"),
        ));
        kube::Client::try_from(config).expect("kube client")
    }

    /// A kubeconfig file pointing at this server (for the CLI).
    pub fn write_kubeconfig(&self, path: &std::path::Path) {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster: {{server: \"{}\"}}\ncontexts:\n- name: test\n  context: {{cluster: test, user: test}}\ncurrent-context: test\nusers:\n- name: test\n  user: {{}}\n",
            self.url()
        );
        std::fs::write(path, text).expect("write kubeconfig");
    }

    fn serve(&self, listener: TcpListener) {
        let shared = self.shared.clone();
        let mut set = JoinSet::new();
        let conns = Arc::new(Mutex::new(JoinSet::new()));
        let conns2 = conns.clone();
        set.spawn(async move {
            // Dropping this task's JoinSet (on stop) aborts every connection.
            let _conns = conns2;
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let shared = shared.clone();
                let service = service_fn(move |req| {
                    let shared = shared.clone();
                    async move { Ok::<_, Infallible>(handle(&shared, req).await) }
                });
                _conns
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .spawn(async move {
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
            }
        });
        *self.running.lock().unwrap_or_else(|e| e.into_inner()) = Some(set);
        drop(conns);
    }

    /// Drops every connection and closes the port.
    pub async fn stop(&self) {
        *self.reserved.lock().unwrap_or_else(|e| e.into_inner()) = Some(port_socket(self.addr));
        let set = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(mut set) = set {
            set.abort_all();
            while set.join_next().await.is_some() {}
        }
    }

    /// Serves again on the same port.
    pub async fn start(&self) {
        self.serve(listen(self.addr));
        self.reserved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }

    /// Forgets history: watches from any version before now get 410.
    pub fn compact(&self) {
        let mut s = lock(&self.shared);
        s.compacted = s.rv;
        for c in s.collections.values_mut() {
            c.history.clear();
        }
    }

    /// Compacts and ends every open watch with a 410 ERROR event.
    pub fn expire_watches(&self) {
        self.compact();
        let _ = self.shared.signals.send(Signal::Expire);
    }

    /// Installs a CRD's kind (it then lists empty).
    pub fn install_crd(&self, kind: &str) {
        let k = chokepoint_config::kube::WatchedKind::by_name(kind).expect("a watched kind");
        lock(&self.shared).collections.entry(k.path()).or_default();
    }

    /// Creates or replaces an object (by kind, namespace and name); sets uid,
    /// creationTimestamp (when missing) and resourceVersion. Returns the version.
    pub fn apply(&self, object: Value) -> u64 {
        self.change(object, false)
    }

    /// Deletes an object; returns the version of the deletion, or None when it did not exist.
    pub fn delete(&self, kind: &str, namespace: Option<&str>, name: &str) -> Option<u64> {
        let k = chokepoint_config::kube::WatchedKind::by_name(kind).expect("a watched kind");
        let path = k.path();
        let mut s = lock(&self.shared);
        s.rv += 1;
        let rv = s.rv;
        let c = s.collections.get_mut(&path)?;
        let mut object = c
            .objects
            .remove(&(namespace.unwrap_or("").to_owned(), name.to_owned()))?;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.record(&mut s, path, rv, "DELETED", object);
        Some(rv)
    }

    /// Applies many objects under one lock (bulk loading for the scale bench); no watcher
    /// sees them as events unless `announce`.
    pub fn apply_all(&self, objects: Vec<Value>, announce: bool) {
        for o in objects {
            self.change(o, !announce);
        }
    }

    fn change(&self, mut object: Value, silent: bool) -> u64 {
        let kind = object["kind"].as_str().expect("object kind").to_owned();
        let k = chokepoint_config::kube::WatchedKind::by_name(&kind).expect("a watched kind");
        let path = k.path();
        let ns = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        let name = object["metadata"]["name"]
            .as_str()
            .expect("metadata.name")
            .to_owned();
        let mut s = lock(&self.shared);
        s.rv += 1;
        let rv = s.rv;
        s.uid += 1;
        let uid = format!("00000000-0000-4000-8000-{:012x}", s.uid);
        let c = s.collections.get_mut(&path).expect("the kind is installed");
        let old = c.objects.get(&(ns.clone(), name.clone()));
        let meta = &mut object["metadata"];
        if meta.get("uid").is_none() {
            let keep = old
                .and_then(|o| o["metadata"]["uid"].as_str())
                .map(str::to_owned);
            meta["uid"] = json!(keep.unwrap_or(uid));
        }
        if meta.get("creationTimestamp").is_none() {
            meta["creationTimestamp"] = json!("2026-11-20T10:00:00Z");
        }
        meta["resourceVersion"] = json!(rv.to_string());
        // The generation moves with everything but metadata and status.
        let content = |o: &Value| {
            let mut o = o.clone();
            if let Some(m) = o.as_object_mut() {
                m.remove("metadata");
                m.remove("status");
            }
            o
        };
        let generation = match old {
            Some(o) if content(o) == content(&object) => {
                o["metadata"]["generation"].as_i64().unwrap_or(1)
            }
            Some(o) => o["metadata"]["generation"].as_i64().unwrap_or(0) + 1,
            None => 1,
        };
        object["metadata"]["generation"] = json!(generation);
        // With a status subresource, writes of the object leave its status alone.
        if has_status_subresource(&kind) {
            match old.and_then(|o| o.get("status")) {
                Some(status) => object["status"] = status.clone(),
                None => {
                    object.as_object_mut().map(|o| o.remove("status"));
                }
            }
        }
        let kind_str = if old.is_some() { "MODIFIED" } else { "ADDED" };
        c.objects.insert((ns, name), object.clone());
        if !silent {
            self.record(&mut s, path, rv, kind_str, object);
        }
        rv
    }

    fn record(&self, s: &mut State, path: String, rv: u64, kind: &'static str, object: Value) {
        let change = Arc::new(Change {
            path: path.clone(),
            rv,
            kind,
            object,
            at: Instant::now(),
        });
        if let Some(c) = s.collections.get_mut(&path) {
            c.history.push(change.clone());
        }
        let _ = self.shared.signals.send(Signal::Change(change));
    }

    /// When the change with this version was applied.
    pub fn applied_at(&self, rv: u64) -> Option<Instant> {
        let s = lock(&self.shared);
        s.collections
            .values()
            .flat_map(|c| c.history.iter())
            .find(|c| c.rv == rv)
            .map(|c| c.at)
    }

    /// Every write of a status subresource so far, in order.
    pub fn status_writes(&self) -> Vec<StatusWrite> {
        lock(&self.shared).status_writes.clone()
    }

    /// The stored object (with its status), if any.
    pub fn object(&self, kind: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
        let k = chokepoint_config::kube::WatchedKind::by_name(kind).expect("a watched kind");
        let s = lock(&self.shared);
        s.collections
            .get(&k.path())?
            .objects
            .get(&(namespace.unwrap_or("").to_owned(), name.to_owned()))
            .cloned()
    }

    /// A Lease, if it exists.
    pub fn lease(&self, namespace: &str, name: &str) -> Option<Value> {
        lock(&self.shared)
            .leases
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Every Event created so far.
    pub fn events(&self) -> Vec<Value> {
        lock(&self.shared).events.clone()
    }

    /// How many list (and watch) requests a kind has had.
    pub fn requests(&self, kind: &str) -> (u64, u64) {
        let k = chokepoint_config::kube::WatchedKind::by_name(kind).expect("a watched kind");
        let s = lock(&self.shared);
        (
            s.lists.get(&k.path()).copied().unwrap_or(0),
            s.watches.get(&k.path()).copied().unwrap_or(0),
        )
    }
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response<ServerBody> {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16(),
    });
    let mut r = Response::new(ServerBody::full(body.to_string()));
    *r.status_mut() = code;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn ok_json(code: StatusCode, value: &Value) -> Response<ServerBody> {
    let mut r = Response::new(ServerBody::full(value.to_string()));
    *r.status_mut() = code;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn query(req: &Request<Incoming>) -> HashMap<String, String> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.replace("%3A", ":").replace("%2F", "/")))
        .collect()
}

async fn handle(shared: &Arc<Shared>, req: Request<Incoming>) -> Response<ServerBody> {
    let path = req.uri().path().to_owned();
    if path.starts_with("/apis/events.k8s.io/v1/namespaces/") {
        return event(shared, req).await;
    }
    if let Some(rest) = path.strip_prefix("/apis/coordination.k8s.io/v1/namespaces/") {
        return lease(shared, rest.to_owned(), req).await;
    }
    let target = status_target(&lock(shared), &path);
    if let Some(target) = target {
        return write_status(shared, target, req).await;
    }
    if req.method() != Method::GET {
        return status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "read only",
        );
    }
    let q = query(&req);
    let s = lock(shared);
    let Some((kind, api_version)) = s.kinds.get(&path).cloned() else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        );
    };
    if !s.collections.contains_key(&path) {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        );
    }
    drop(s);
    if matches!(q.get("watch").map(String::as_str), Some("1" | "true")) {
        watch(shared, path, &kind, &api_version, &q)
    } else {
        list(shared, &path, &kind, &api_version, &q)
    }
}

fn list(
    shared: &Shared,
    path: &str,
    kind: &str,
    api_version: &str,
    q: &HashMap<String, String>,
) -> Response<ServerBody> {
    let mut s = lock(shared);
    *s.lists.entry(path.to_owned()).or_default() += 1;
    let limit: usize = q
        .get("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let (start, token_rv) = match q.get("continue").and_then(|t| t.split_once(':')) {
        Some((rv, offset)) => (offset.parse().unwrap_or(0), rv.parse().unwrap_or(0)),
        None => (0usize, s.rv),
    };
    if token_rv < s.compacted {
        return status(
            StatusCode::GONE,
            "Expired",
            "the provided continue parameter is too old",
        );
    }
    let c = &s.collections[path];
    let items: Vec<&Value> = c.objects.values().skip(start).take(limit).collect();
    let next = start + items.len();
    let mut metadata = json!({"resourceVersion": s.rv.to_string()});
    if next < c.objects.len() {
        metadata["continue"] = json!(format!("{token_rv}:{next}"));
        metadata["remainingItemCount"] = json!(c.objects.len() - next);
    }
    let body = json!({
        "kind": format!("{kind}List"), "apiVersion": api_version,
        "metadata": metadata, "items": items,
    });
    ok_json(StatusCode::OK, &body)
}

fn line(kind: &str, object: &Value) -> Bytes {
    let mut text = json!({"type": kind, "object": object}).to_string();
    text.push('\n');
    Bytes::from(text)
}

fn gone() -> Bytes {
    line(
        "ERROR",
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "too old resource version", "reason": "Expired", "code": 410}),
    )
}

fn watch(
    shared: &Arc<Shared>,
    path: String,
    kind: &str,
    api_version: &str,
    q: &HashMap<String, String>,
) -> Response<ServerBody> {
    let (tx, rx) = mpsc::channel::<Bytes>(1024);
    let mut s = lock(shared);
    *s.watches.entry(path.clone()).or_default() += 1;
    let from: Option<u64> = q
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .filter(|v| *v > 0);
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|v| v == "true");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(290));
    let mut signals = shared.signals.subscribe();
    let mut initial: Vec<Bytes> = Vec::new();
    let mut last = s.rv;
    match from {
        Some(rv) if rv < s.compacted => initial.push(gone()),
        Some(rv) => {
            for c in s.collections[&path].history.iter().filter(|c| c.rv > rv) {
                initial.push(line(c.kind, &c.object));
            }
        }
        // No version: the current objects as ADDED, then changes.
        None => {
            for o in s.collections[&path].objects.values() {
                initial.push(line("ADDED", o));
            }
        }
    }
    let expired = from.is_some_and(|rv| rv < s.compacted);
    drop(s);
    let shared = shared.clone();
    let kind = kind.to_owned();
    let api_version = api_version.to_owned();
    tokio::spawn(async move {
        for b in initial {
            if tx.send(b).await.is_err() {
                return;
            }
        }
        if expired {
            return;
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(shared.bookmark_every);
        tick.tick().await;
        loop {
            let out = tokio::select! {
                _ = &mut deadline => return,
                _ = tick.tick(), if bookmarks => {
                    let rv = lock(&shared).rv;
                    last = last.max(rv);
                    line("BOOKMARK", &json!({"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": rv.to_string()}}))
                }
                signal = signals.recv() => match signal {
                    Ok(Signal::Change(c)) if c.path == path && c.rv > last => line(c.kind, &c.object),
                    Ok(Signal::Change(_)) => continue,
                    Ok(Signal::Expire) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        let _ = tx.send(gone()).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            };
            if tx.send(out).await.is_err() {
                return;
            }
        }
    });
    let mut r = Response::new(ServerBody::Stream(rx));
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

/// The bearer token of a request (empty: none).
fn client_of(req: &Request<Incoming>) -> String {
    req.headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .to_owned()
}

async fn json_body(req: Request<Incoming>) -> Result<Value, Response<ServerBody>> {
    use http_body_util::BodyExt;
    let Ok(body) = req.into_body().collect().await else {
        return Err(status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "unreadable body",
        ));
    };
    serde_json::from_slice::<Value>(&body.to_bytes())
        .map_err(|_| status(StatusCode::BAD_REQUEST, "BadRequest", "not JSON"))
}

/// `…/namespaces/NS/PLURAL/NAME/status` of an installed kind with a status subresource:
/// (collection path, kind, namespace, name).
struct StatusTarget {
    path: String,
    kind: String,
    namespace: String,
    name: String,
}

fn status_target(s: &State, path: &str) -> Option<StatusTarget> {
    let rest = path.strip_suffix("/status")?;
    let (head, name) = rest.rsplit_once('/')?;
    let (head, plural) = head.rsplit_once('/')?;
    let (base, namespace) = head.rsplit_once("/namespaces/")?;
    let collection = format!("{base}/{plural}");
    let (kind, _) = s.kinds.get(&collection)?;
    (has_status_subresource(kind) && s.collections.contains_key(&collection)).then(|| {
        StatusTarget {
            path: collection,
            kind: kind.clone(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    })
}

/// A merge patch (PATCH) or a replacement (PUT) of an object's status.
async fn write_status(
    shared: &Shared,
    t: StatusTarget,
    req: Request<Incoming>,
) -> Response<ServerBody> {
    let method = req.method().clone();
    let client = client_of(&req);
    if method != Method::PATCH && method != Method::PUT {
        return status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "PATCH or PUT",
        );
    }
    let body = match json_body(req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let mut s = lock(shared);
    let key = (t.namespace.clone(), t.name.clone());
    let Some(mut object) = s.collections[&t.path].objects.get(&key).cloned() else {
        return status(StatusCode::NOT_FOUND, "NotFound", "no such object");
    };
    let new_status = body.get("status").cloned().unwrap_or(Value::Null);
    if method == Method::PATCH {
        merge(&mut object["status"], &new_status);
    } else {
        object["status"] = new_status;
    }
    s.rv += 1;
    let rv = s.rv;
    object["metadata"]["resourceVersion"] = json!(rv.to_string());
    s.collections
        .get_mut(&t.path)
        .expect("checked")
        .objects
        .insert(key, object.clone());
    s.status_writes.push(StatusWrite {
        client,
        kind: t.kind,
        namespace: t.namespace,
        name: t.name,
        status: object["status"].clone(),
    });
    let change = Arc::new(Change {
        path: t.path.clone(),
        rv,
        kind: "MODIFIED",
        object: object.clone(),
        at: Instant::now(),
    });
    if let Some(c) = s.collections.get_mut(&t.path) {
        c.history.push(change.clone());
    }
    let _ = shared.signals.send(Signal::Change(change));
    ok_json(StatusCode::OK, &object)
}

/// JSON merge patch (RFC 7386).
fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().expect("an object");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// `NS/leases` (POST) or `NS/leases/NAME` (GET, PUT).
async fn lease(shared: &Shared, rest: String, req: Request<Incoming>) -> Response<ServerBody> {
    let method = req.method().clone();
    let parts: Vec<&str> = rest.split('/').collect();
    let (namespace, name) = match parts.as_slice() {
        [ns, "leases"] => (ns.to_string(), None),
        [ns, "leases", name] => (ns.to_string(), Some(name.to_string())),
        _ => return status(StatusCode::NOT_FOUND, "NotFound", "no such resource"),
    };
    let body = if method == Method::GET {
        None
    } else {
        match json_body(req).await {
            Ok(b) => Some(b),
            Err(r) => return r,
        }
    };
    let mut s = lock(shared);
    match (method, name, body) {
        (Method::GET, Some(name), _) => match s.leases.get(&(namespace, name)) {
            Some(l) => ok_json(StatusCode::OK, l),
            None => status(StatusCode::NOT_FOUND, "NotFound", "leases not found"),
        },
        (Method::POST, None, Some(mut lease)) => {
            let name = lease["metadata"]["name"].as_str().unwrap_or("").to_owned();
            let key = (namespace.clone(), name);
            if s.leases.contains_key(&key) {
                return status(
                    StatusCode::CONFLICT,
                    "AlreadyExists",
                    "leases already exists",
                );
            }
            s.rv += 1;
            s.uid += 1;
            lease["apiVersion"] = json!("coordination.k8s.io/v1");
            lease["kind"] = json!("Lease");
            lease["metadata"]["namespace"] = json!(namespace);
            lease["metadata"]["uid"] = json!(format!("00000000-0000-4000-9000-{:012x}", s.uid));
            lease["metadata"]["resourceVersion"] = json!(s.rv.to_string());
            s.leases.insert(key, lease.clone());
            ok_json(StatusCode::CREATED, &lease)
        }
        (Method::PUT, Some(name), Some(mut lease)) => {
            let key = (namespace, name);
            let Some(current) = s.leases.get(&key) else {
                return status(StatusCode::NOT_FOUND, "NotFound", "leases not found");
            };
            if lease["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"] {
                return status(
                    StatusCode::CONFLICT,
                    "Conflict",
                    "the object has been modified; please apply your changes to the latest version and try again",
                );
            }
            s.rv += 1;
            lease["metadata"]["resourceVersion"] = json!(s.rv.to_string());
            s.leases.insert(key, lease.clone());
            ok_json(StatusCode::OK, &lease)
        }
        _ => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "not served",
        ),
    }
}

async fn event(shared: &Shared, req: Request<Incoming>) -> Response<ServerBody> {
    use http_body_util::BodyExt;
    let method = req.method().clone();
    let Ok(body) = req.into_body().collect().await else {
        return status(StatusCode::BAD_REQUEST, "BadRequest", "unreadable body");
    };
    let Ok(mut value) = serde_json::from_slice::<Value>(&body.to_bytes()) else {
        return status(StatusCode::BAD_REQUEST, "BadRequest", "not JSON");
    };
    let mut s = lock(shared);
    s.rv += 1;
    value["metadata"]["resourceVersion"] = json!(s.rv.to_string());
    s.events.push(value.clone());
    let code = if method == Method::POST {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    ok_json(code, &value)
}

/// A whole body, or a stream of watch lines.
#[derive(Debug)]
pub enum ServerBody {
    Full(Full<Bytes>),
    Stream(mpsc::Receiver<Bytes>),
}

impl ServerBody {
    fn full(text: String) -> Self {
        ServerBody::Full(Full::new(Bytes::from(text)))
    }
}

impl Body for ServerBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            ServerBody::Full(f) => Pin::new(f).poll_frame(cx),
            ServerBody::Stream(rx) => rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b)))),
        }
    }
}
