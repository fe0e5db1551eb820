//! What the gateway tells the API server after it installs a snapshot from it: one Event per
//! policy object and change, and, from the one gateway that holds the status Lease, the
//! `Accepted`/`Enforced` conditions of DeveloperNetworkPolicies (docs/observability.md, "In
//! Kubernetes: Events and conditions").
//!
//! A change is a new [`Revision`] (generation or mode) of an object this gateway has not
//! reported yet. The objects of the initial sync are taken as reported without a Normal
//! Event (a rollout of every gateway would otherwise announce every policy once per node);
//! invalid ones are warned about then too, as on every change. The Events go through the
//! rate-limited [`Publisher`]; the conditions through the status writer's task, paced by its
//! own token bucket and written only where they differ from what the object carries.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chokepoint_config::kube::WatchedKind;
use chokepoint_config::kube::conditions::{self, up_to_date};
use chokepoint_config::kube::events::{self, Installed, OnOutcome, Outcome, Publisher, Reporter};
use chokepoint_config::kube::lease::{Elector, LeaseConfig};
use chokepoint_config::kube::objects::{Findings, PolicyObject, Revision};
use chokepoint_config::kube::ratelimit::TokenBucket;
use chokepoint_config::settings::{Kubernetes, defaults};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp as Now;
use kube::runtime::events::EventType;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::kube::{ClusterMetrics, EventLabels, KindLabels, StatusWriteLabels};
use crate::audit::Timestamp;
use crate::policy::{Report, Snapshot};

const DEVELOPER: &str = chokepoint_config::api::developer::KIND;

/// The reports of one gateway; dropping it stops its tasks (and its part in the election).
#[derive(Debug)]
pub struct Reports {
    node: String,
    publisher: Publisher,
    reported: HashMap<String, Revision>,
    status: Option<StatusWriter>,
    metrics: ClusterMetrics,
    first: bool,
}

impl Reports {
    pub fn start(
        client: kube::Client,
        node: &str,
        settings: &Kubernetes,
        metrics: &ClusterMetrics,
    ) -> Reports {
        let counted = metrics.events.clone();
        let on_outcome: OnOutcome = Arc::new(move |type_, outcome| {
            counted
                .get_or_create(&EventLabels::of(type_, outcome))
                .inc();
        });
        let publisher = Publisher::start(
            client.clone(),
            Reporter {
                controller: "chokepoint".into(),
                instance: Some(node.to_owned()),
            },
            &settings.events,
            defaults::EVENTS_QUEUE,
            on_outcome,
        );
        let status = settings
            .status
            .write
            .then(|| StatusWriter::start(client, node, settings, metrics));
        Reports {
            node: node.to_owned(),
            publisher,
            reported: HashMap::new(),
            status,
            metrics: metrics.clone(),
            first: true,
        }
    }

    /// After the snapshot `generation` built from `policies` was installed; `report` is its
    /// status (for the pods each policy selects here).
    pub async fn installed(
        &mut self,
        policies: &[PolicyObject],
        generation: u64,
        snapshot: Arc<Snapshot>,
    ) {
        let changed = changes(&mut self.reported, policies);
        for o in &changed {
            if matches!(o.findings, Findings::Errors(_)) {
                self.metrics
                    .skipped_objects
                    .get_or_create(&KindLabels {
                        kind: o.kind.to_owned(),
                    })
                    .inc();
            }
        }
        let first = std::mem::take(&mut self.first);
        let to_report: Vec<&PolicyObject> = changed
            .into_iter()
            .filter(|o| !first || matches!(o.findings, Findings::Errors(_)))
            .collect();
        if !to_report.is_empty() {
            // Which pods every policy selects: a pass over the snapshot's pods, kept off the
            // runtime's workers (as the compile) and skipped when only invalid objects changed.
            let needed = to_report
                .iter()
                .any(|o| !matches!(o.findings, Findings::Errors(_)));
            let selects = if needed {
                tokio::task::spawn_blocking(move || selected(&snapshot.status(Timestamp::now())))
                    .await
                    .unwrap_or_default()
            } else {
                HashMap::new()
            };
            for o in to_report {
                let at = Installed {
                    node: &self.node,
                    snapshot: generation,
                    selects: match o.findings {
                        Findings::Errors(_) => None,
                        _ => Some(
                            selects
                                .get(&key(
                                    o.kind,
                                    o.reference.namespace.as_deref(),
                                    o.reference.name.as_deref(),
                                ))
                                .copied()
                                .unwrap_or(0),
                        ),
                    },
                };
                self.publisher
                    .offer(&o.uid, events::policy_event(o, at), o.reference.clone());
            }
        }
        if let Some(s) = &self.status {
            s.installed(policies);
        }
    }
}

/// The objects whose revision was not reported yet (all of them the first time); forgets
/// the deleted ones.
fn changes<'a>(
    reported: &mut HashMap<String, Revision>,
    policies: &'a [PolicyObject],
) -> Vec<&'a PolicyObject> {
    let present: HashSet<&str> = policies.iter().map(|o| o.uid.as_str()).collect();
    reported.retain(|uid, _| present.contains(uid.as_str()));
    policies
        .iter()
        .filter(|o| {
            let new = reported
                .get(&o.uid)
                .is_none_or(|r| !r.same_meaning(&o.revision));
            if new {
                reported.insert(o.uid.clone(), o.revision.clone());
            }
            new
        })
        .collect()
}

type Key = (String, Option<String>, String);

fn key(kind: &str, namespace: Option<&str>, name: Option<&str>) -> Key {
    (
        kind.to_owned(),
        namespace.map(str::to_owned),
        name.unwrap_or_default().to_owned(),
    )
}

/// How many pods on this node each policy of the report selects.
fn selected(report: &Report) -> HashMap<Key, usize> {
    report
        .policies
        .iter()
        .map(|p| {
            (
                key(&p.kind, p.namespace.as_deref(), Some(&p.name)),
                p.selects.len(),
            )
        })
        .collect()
}

/// One DeveloperNetworkPolicy's conditions as they should be, and as they are.
#[derive(Debug, Clone)]
struct Target {
    uid: String,
    namespace: String,
    name: String,
    desired: Vec<Condition>,
    observed: Vec<Condition>,
}

/// Takes part in the status Lease and, while holding it, writes conditions.
#[derive(Debug)]
struct StatusWriter {
    lease: String,
    targets: watch::Sender<Arc<Vec<Target>>>,
    _elector: Elector,
    task: JoinHandle<()>,
}

impl StatusWriter {
    fn start(
        client: kube::Client,
        node: &str,
        settings: &Kubernetes,
        metrics: &ClusterMetrics,
    ) -> StatusWriter {
        let s = &settings.status;
        let elector = Elector::start(
            client.clone(),
            LeaseConfig {
                namespace: s.lease_namespace.clone(),
                name: s.lease_name.clone(),
                identity: node.to_owned(),
                duration: s.lease_duration,
            },
        );
        let (targets, rx) = watch::channel(Arc::new(Vec::new()));
        let task = tokio::spawn(write_conditions(
            client,
            rx,
            elector.subscribe(),
            s.lease_duration,
            metrics.clone(),
        ));
        StatusWriter {
            lease: format!("{}/{}", s.lease_namespace, s.lease_name),
            targets,
            _elector: elector,
            task,
        }
    }

    /// The conditions every DeveloperNetworkPolicy should carry now that `policies` are
    /// installed here (computed on every gateway: cheap, and ready when it is elected).
    fn installed(&self, policies: &[PolicyObject]) {
        let now = Time(Now::now());
        let targets = policies
            .iter()
            .filter(|o| o.kind == DEVELOPER)
            .map(|o| Target {
                uid: o.uid.clone(),
                namespace: o.reference.namespace.clone().unwrap_or_default(),
                name: o.reference.name.clone().unwrap_or_default(),
                desired: conditions::desired(o, &self.lease, &now),
                observed: o.conditions.clone(),
            })
            .collect();
        self.targets.send_replace(Arc::new(targets));
    }
}

impl Drop for StatusWriter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// While this gateway is the leader: writes every target whose conditions differ from the
/// object's and from what it last wrote. Again after each install, on election, and every
/// lease duration (to retry failed writes).
async fn write_conditions(
    client: kube::Client,
    mut targets: watch::Receiver<Arc<Vec<Target>>>,
    mut leader: watch::Receiver<bool>,
    resync: std::time::Duration,
    metrics: ClusterMetrics,
) {
    let kind: &WatchedKind = WatchedKind::by_name(DEVELOPER).expect("a watched kind");
    let mut bucket = TokenBucket::new(
        defaults::STATUS_WRITES_PER_SECOND,
        defaults::STATUS_WRITES_BURST,
        tokio::time::Instant::now(),
    );
    // What this leader wrote (the watch may not have brought it back yet).
    let mut written: HashMap<String, Vec<Condition>> = HashMap::new();
    loop {
        let is_leader = *leader.borrow_and_update();
        metrics.status_writer.set(i64::from(is_leader));
        if !is_leader {
            written.clear();
        } else {
            let now = targets.borrow_and_update().clone();
            let present: HashSet<&str> = now.iter().map(|t| t.uid.as_str()).collect();
            written.retain(|uid, _| present.contains(uid.as_str()));
            for t in now.iter() {
                if written
                    .get(&t.uid)
                    .is_some_and(|w| up_to_date(w, &t.desired))
                    || up_to_date(&t.observed, &t.desired)
                {
                    continue;
                }
                bucket.take().await;
                if !*leader.borrow() {
                    break;
                }
                let outcome = match conditions::write(
                    &client,
                    kind,
                    &t.namespace,
                    &t.name,
                    &t.desired,
                )
                .await
                {
                    Ok(()) => {
                        written.insert(t.uid.clone(), t.desired.clone());
                        "written"
                    }
                    Err(e) => {
                        tracing::warn!(target: "kube", namespace = %t.namespace, name = %t.name, "cannot write DeveloperNetworkPolicy conditions: {e}");
                        "failed"
                    }
                };
                metrics
                    .status_writes
                    .get_or_create(&StatusWriteLabels {
                        outcome: outcome.to_owned(),
                    })
                    .inc();
            }
        }
        tokio::select! {
            r = targets.changed() => if r.is_err() { return },
            r = leader.changed() => if r.is_err() { return },
            () = tokio::time::sleep(resync) => {}
        }
    }
}

impl EventLabels {
    pub(super) fn of(type_: EventType, outcome: Outcome) -> EventLabels {
        EventLabels {
            r#type: match type_ {
                EventType::Normal => "normal",
                EventType::Warning => "warning",
            }
            .to_owned(),
            outcome: match outcome {
                Outcome::Published => "published",
                Outcome::Superseded => "superseded",
                Outcome::Dropped => "dropped",
                Outcome::Failed => "failed",
            }
            .to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(uid: &str, generation: i64, rv: &str, staged: bool) -> PolicyObject {
        PolicyObject {
            kind: DEVELOPER,
            uid: uid.into(),
            reference: Default::default(),
            revision: Revision {
                generation: Some(generation),
                resource_version: rv.into(),
                staged,
            },
            findings: Findings::None,
            conditions: Vec::new(),
        }
    }

    fn uids(v: Vec<&PolicyObject>) -> Vec<&str> {
        v.into_iter().map(|o| o.uid.as_str()).collect()
    }

    #[test]
    fn one_report_per_object_and_change() {
        let mut reported = HashMap::new();
        let a1 = object("a", 1, "10", false);
        let b1 = object("b", 1, "11", false);
        assert_eq!(
            uids(changes(&mut reported, &[a1.clone(), b1.clone()])),
            ["a", "b"]
        );
        // The status was written (a new resourceVersion, the same generation): nothing.
        let a1s = object("a", 1, "12", false);
        assert!(changes(&mut reported, &[a1s, b1.clone()]).is_empty());
        // The spec of a changed; then b is staged (an annotation: no new generation).
        let a2 = object("a", 2, "13", false);
        assert_eq!(uids(changes(&mut reported, &[a2.clone(), b1])), ["a"]);
        let b1staged = object("b", 1, "14", true);
        assert_eq!(uids(changes(&mut reported, &[a2.clone(), b1staged])), ["b"]);
        // b deleted and created again under the same name: a new UID, reported.
        let b_new = object("b2", 1, "15", false);
        assert_eq!(uids(changes(&mut reported, &[a2, b_new])), ["b2"]);
        assert_eq!(reported.len(), 2, "deleted objects are forgotten");
    }

    #[test]
    fn event_labels_are_a_fixed_set() {
        let mut all = HashSet::new();
        for t in [EventType::Normal, EventType::Warning] {
            for o in [
                Outcome::Published,
                Outcome::Superseded,
                Outcome::Dropped,
                Outcome::Failed,
            ] {
                all.insert(EventLabels::of(t, o));
            }
        }
        assert_eq!(all.len(), 8);
    }
}
