//! Watching every kind and handing out debounced updates of the world.
//!
//! One kube-runtime [`watcher`] per kind: it lists (paged), then watches from the list's
//! resourceVersion with bookmarks, and on its own re-watches after a dropped connection,
//! relists after `410 Gone`, and backs off while the API server is away. Each kind's task
//! converts objects as they arrive and applies them to the shared [`ClusterObjects`] (a relist
//! is buffered until `InitDone` and replaces the kind's store in one step, so objects deleted
//! while the watch was down disappear). A CRD that is not installed answers 404: the kind
//! counts as synced and empty, and the watcher keeps retrying, so installing the CRD later is
//! picked up.
//!
//! [`KubeSource::next`] waits for a change, lets further changes gather for the debounce
//! interval, and assembles the world on a blocking thread. The first update comes only after
//! every kind has synced (readiness).

use std::fmt::Debug;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DynamicObject};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::kinds::{WATCHED, WatchedKind};
use super::objects::{self, ClusterObjects, Keyed, PolicyObject};
use crate::Diagnostics;
use crate::load::World;

/// How the source behaves.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// How long changes gather before a rebuild.
    pub debounce: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            debounce: Duration::from_millis(crate::settings::defaults::KUBERNETES_DEBOUNCE_MS),
        }
    }
}

/// One new state of the world.
#[derive(Debug)]
pub struct Update {
    pub world: World,
    /// Every policy object, valid or not, as the reports about them (Events, conditions)
    /// need it.
    pub policies: Vec<PolicyObject>,
    /// The findings of every stored policy object: the errors of those left out of `world`,
    /// and warnings.
    pub findings: Diagnostics,
}

/// The running watchers. Dropping it stops them.
#[derive(Debug)]
pub struct KubeSource {
    objects: Arc<Mutex<ClusterObjects>>,
    changed: watch::Receiver<u64>,
    debounce: Duration,
    delivered: bool,
    tasks: Vec<JoinHandle<()>>,
}

fn lock(objects: &Mutex<ClusterObjects>) -> MutexGuard<'_, ClusterObjects> {
    // A panicking kind task cannot leave a store half-written (each change is one call).
    objects.lock().unwrap_or_else(PoisonError::into_inner)
}

impl KubeSource {
    /// Starts one watcher per kind on the current Tokio runtime.
    pub fn start(client: Client, options: WatchOptions) -> KubeSource {
        let objects = Arc::new(Mutex::new(ClusterObjects::new(WATCHED)));
        let (tx, changed) = watch::channel(0u64);
        let mut tasks = Vec::new();
        for kind in WATCHED {
            let feed = Feed {
                kind,
                objects: objects.clone(),
                changed: tx.clone(),
            };
            let span = tracing::info_span!("kube", kind = kind.kind);
            let c = client.clone();
            let task = match kind.kind {
                "Namespace" => tokio::spawn(
                    feed.run(Api::<Namespace>::all(c), objects::namespace)
                        .instrument(span),
                ),
                "Node" => tokio::spawn(
                    feed.run(Api::<Node>::all(c), objects::node)
                        .instrument(span),
                ),
                "Pod" => tokio::spawn(feed.run(Api::<Pod>::all(c), objects::pod).instrument(span)),
                "Service" => tokio::spawn(
                    feed.run(Api::<Service>::all(c), objects::service)
                        .instrument(span),
                ),
                "EndpointSlice" => tokio::spawn(
                    feed.run(Api::<EndpointSlice>::all(c), objects::endpoint_slice)
                        .instrument(span),
                ),
                _ => {
                    let api = Api::<DynamicObject>::all_with(c, &kind.api_resource());
                    tokio::spawn(
                        feed.run(api, move |o| objects::policy(kind, o))
                            .instrument(span),
                    )
                }
            };
            tasks.push(task);
        }
        KubeSource {
            objects,
            changed,
            debounce: options.debounce,
            delivered: false,
            tasks,
        }
    }

    /// The kinds whose initial sync has not finished.
    pub fn pending(&self) -> Vec<&'static str> {
        lock(&self.objects).pending()
    }

    /// The next state of the world: the first once every kind has synced, then one after each
    /// burst of changes.
    pub async fn next(&mut self) -> Update {
        loop {
            let ready = lock(&self.objects).ready();
            // Every watcher ended (only when the runtime shuts down): nothing will change.
            if (self.delivered || !ready) && self.changed.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(self.debounce).await;
            self.changed.borrow_and_update();
            let objects = self.objects.clone();
            let built = tokio::task::spawn_blocking(move || {
                let o = lock(&objects);
                o.ready().then(|| Update {
                    world: o.world(),
                    policies: o.policy_objects(),
                    findings: o.diagnostics(),
                })
            })
            .await;
            match built {
                Ok(Some(update)) => {
                    self.delivered = true;
                    return update;
                }
                Ok(None) => {}
                Err(e) => tracing::error!(target: "kube", "assembling the world failed: {e}"),
            }
        }
    }
}

impl Drop for KubeSource {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// What one kind's task writes to.
struct Feed {
    kind: &'static WatchedKind,
    objects: Arc<Mutex<ClusterObjects>>,
    changed: watch::Sender<u64>,
}

impl Feed {
    async fn run<K, F>(self, api: Api<K>, convert: F)
    where
        K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
        F: Fn(&K) -> Keyed,
    {
        let kind = self.kind.kind;
        let mut stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        let mut buffer: Vec<Keyed> = Vec::new();
        let mut absent = false;
        while let Some(item) = stream.next().await {
            match item {
                Ok(Event::Init) => buffer.clear(),
                Ok(Event::InitApply(o)) => buffer.push(convert(&o)),
                Ok(Event::InitDone) => {
                    let count = buffer.len();
                    lock(&self.objects).replace(kind, std::mem::take(&mut buffer));
                    tracing::debug!(target: "kube", kind, count, "listed");
                    absent = false;
                    self.notify();
                }
                Ok(Event::Apply(o)) => {
                    let object = convert(&o);
                    if lock(&self.objects).apply(kind, object) {
                        self.notify();
                    }
                }
                Ok(Event::Delete(o)) => {
                    let key = convert(&o).key;
                    lock(&self.objects).delete(kind, &key);
                    self.notify();
                }
                Err(e) if self.kind.optional && not_found(&e) => {
                    if !absent {
                        tracing::info!(target: "kube", kind, "not served (CRD not installed): read as empty; retrying in the background");
                        lock(&self.objects).absent(kind);
                        absent = true;
                        self.notify();
                    }
                }
                Err(e) => {
                    tracing::warn!(target: "kube", kind, "watch interrupted, recovering: {e}")
                }
            }
        }
    }

    fn notify(&self) {
        self.changed.send_modify(|g| *g += 1);
    }
}

fn not_found(e: &watcher::Error) -> bool {
    matches!(e, watcher::Error::InitialListFailed(kube::Error::Api(s)) if s.code == 404)
}
