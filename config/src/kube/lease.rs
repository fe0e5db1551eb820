//! Electing one gateway of the cluster with a `coordination.k8s.io/v1` Lease, as client-go's
//! leader election does it: the holder renews `renewTime` every third of
//! `leaseDurationSeconds`; the others watch the Lease's resourceVersion and take it over
//! when it has not changed for a whole lease duration *by their own clock* (no clock
//! agreement between nodes is needed). Every write is a create or an update carrying the
//! resourceVersion it read, so two candidates cannot both win: the API server refuses the
//! second with 409 Conflict.
//!
//! A holder that cannot renew (the API server is away, the update conflicts) stops being
//! the leader at once, before another can take over: at most one writer at a time, and for
//! a while none. The Lease is not released on shutdown: the next holder waits out the lease
//! duration.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Which Lease, and who this candidate is.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// `holderIdentity`: the node name (one gateway per node).
    pub identity: String,
    pub duration: Duration,
}

/// The Lease's resourceVersion as last seen, and when it was first seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    version: String,
    at: Instant,
}

/// What to do after reading the Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// There is none: create it, held by us.
    Create,
    /// We hold it: renew.
    Renew,
    /// Free or expired: take it over.
    TakeOver,
    /// Another holds it.
    Follow { holder: String },
}

/// Decides the step for the Lease as read (`None`: not found) at `now`; `seen` is updated.
pub fn step(
    lease: Option<&Lease>,
    identity: &str,
    seen: &mut Option<Seen>,
    now: Instant,
    duration: Duration,
) -> Step {
    let Some(lease) = lease else {
        *seen = None;
        return Step::Create;
    };
    let holder = lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.clone())
        .unwrap_or_default();
    if holder == identity {
        return Step::Renew;
    }
    if holder.is_empty() {
        return Step::TakeOver;
    }
    let version = lease.metadata.resource_version.clone().unwrap_or_default();
    // The holder's own duration: a candidate with another setting still waits as long as
    // the holder promised to renew.
    let held_for = lease
        .spec
        .as_ref()
        .and_then(|s| s.lease_duration_seconds)
        .and_then(|s| u64::try_from(s).ok())
        .map_or(duration, Duration::from_secs);
    match seen {
        Some(s) if s.version == version => {
            if now.saturating_duration_since(s.at) >= held_for {
                Step::TakeOver
            } else {
                Step::Follow { holder }
            }
        }
        _ => {
            *seen = Some(Seen { version, at: now });
            Step::Follow { holder }
        }
    }
}

/// The running election. Dropping it stops taking part (the Lease is left to expire).
#[derive(Debug)]
pub struct Elector {
    leader: watch::Receiver<bool>,
    task: JoinHandle<()>,
}

impl Elector {
    /// Starts taking part on the current runtime.
    pub fn start(client: Client, config: LeaseConfig) -> Elector {
        let (tx, leader) = watch::channel(false);
        let api = Api::<Lease>::namespaced(client, &config.namespace);
        let task = tokio::spawn(run(api, config, tx));
        Elector { leader, task }
    }

    /// True while this gateway holds the Lease.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.leader.clone()
    }
}

impl Drop for Elector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(api: Api<Lease>, config: LeaseConfig, leader: watch::Sender<bool>) {
    let retry = (config.duration / 3).max(Duration::from_millis(100));
    let mut seen = None;
    loop {
        let now_leader = match attempt(&api, &config, &mut seen).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(target: "kube", lease = %config.name, "status Lease: {e}");
                false
            }
        };
        leader.send_if_modified(|l| {
            let changed = *l != now_leader;
            if changed {
                tracing::info!(target: "kube", lease = %config.name, identity = %config.identity, leader = now_leader, "status writer {}", if now_leader { "elected: this gateway writes DeveloperNetworkPolicy conditions" } else { "no more" });
            }
            *l = now_leader;
            changed
        });
        tokio::time::sleep(retry).await;
    }
}

/// One look at the Lease and the write it calls for; true when we hold it afterwards.
async fn attempt(
    api: &Api<Lease>,
    config: &LeaseConfig,
    seen: &mut Option<Seen>,
) -> Result<bool, kube::Error> {
    let current = api.get_opt(&config.name).await?;
    let now = MicroTime(Timestamp::now());
    let seconds = i32::try_from(config.duration.as_secs()).unwrap_or(i32::MAX);
    let written = match step(
        current.as_ref(),
        &config.identity,
        seen,
        Instant::now(),
        config.duration,
    ) {
        Step::Follow { .. } => return Ok(false),
        Step::Create => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(config.name.clone()),
                    namespace: Some(config.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(config.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            api.create(&PostParams::default(), &lease).await
        }
        step @ (Step::Renew | Step::TakeOver) => {
            let mut lease = current.expect("a Lease was read");
            let spec = lease.spec.get_or_insert_with(Default::default);
            if step == Step::TakeOver {
                spec.holder_identity = Some(config.identity.clone());
                spec.acquire_time = Some(now.clone());
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
            spec.lease_duration_seconds = Some(seconds);
            spec.renew_time = Some(now);
            // The update carries the resourceVersion read: a concurrent writer gets 409.
            api.replace(&config.name, &PostParams::default(), &lease)
                .await
        }
    };
    match written {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: &str, version: &str, seconds: i32) -> Lease {
        Lease {
            metadata: ObjectMeta {
                resource_version: Some(version.into()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                lease_duration_seconds: Some(seconds),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn a_lease_not_renewed_for_its_duration_is_taken_over() {
        let d = Duration::from_secs(15);
        let t0 = Instant::now();
        let mut seen = None;
        assert_eq!(step(None, "a", &mut seen, t0, d), Step::Create);
        let follow = Step::Follow { holder: "b".into() };
        assert_eq!(
            step(Some(&lease("b", "1", 10)), "a", &mut seen, t0, d),
            follow
        );
        // Renewed (a new version): the clock starts again.
        let t1 = t0 + Duration::from_secs(9);
        assert_eq!(
            step(Some(&lease("b", "2", 10)), "a", &mut seen, t1, d),
            follow
        );
        let t2 = t1 + Duration::from_secs(9);
        assert_eq!(
            step(Some(&lease("b", "2", 10)), "a", &mut seen, t2, d),
            follow
        );
        // Not renewed for the holder's 10 s (not our 15 s).
        let t3 = t1 + Duration::from_secs(10);
        assert_eq!(
            step(Some(&lease("b", "2", 10)), "a", &mut seen, t3, d),
            Step::TakeOver
        );
        // Ours: renew; released (no holder): take it.
        assert_eq!(
            step(Some(&lease("a", "3", 10)), "a", &mut seen, t3, d),
            Step::Renew
        );
        assert_eq!(
            step(Some(&lease("", "4", 10)), "a", &mut seen, t3, d),
            Step::TakeOver
        );
    }
}
