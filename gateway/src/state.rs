//! The snapshot in force, and how it is replaced.
//!
//! The data path reads the current [`Snapshot`] with one atomic load (ArcSwap) and never
//! locks. Reloads build a whole new snapshot off the data path and swap it in; an invalid
//! update is refused with its errors logged, and the last good snapshot stays.
//!
//! The snapshots come from a [source](crate::source): files or the Kubernetes API.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use chokepoint_config::Diagnostics;
use chokepoint_config::settings::PolicySources;

use crate::audit::Timestamp;
use crate::metrics::Metrics;
use crate::policy::{Invalid, InvalidOutcome, Options, Report, Snapshot};

/// The current snapshot and its generation.
#[derive(Debug)]
pub struct PolicyState {
    current: ArcSwap<Snapshot>,
    generation: AtomicU64,
    /// Held while a snapshot is installed: the generation and the counters it takes over
    /// must come from the snapshot it replaces.
    installing: Mutex<()>,
    /// What is not in force for being invalid (for `/policies`); never read by the data path.
    invalid: Mutex<InvalidPolicies>,
    /// Tells live connections that the snapshot changed (for `recheckOnReload`).
    changed: tokio::sync::watch::Sender<u64>,
    sources: PolicySources,
    metrics: Metrics,
}

impl PolicyState {
    /// A state whose first snapshot (generation 1) is `snapshot`.
    pub fn first(sources: PolicySources, metrics: Metrics, mut snapshot: Snapshot) -> PolicyState {
        metrics.snapshot_generation.set(1);
        snapshot.carry_hits_from(None, 1, SystemTime::now());
        PolicyState {
            current: ArcSwap::from_pointee(snapshot),
            generation: AtomicU64::new(1),
            installing: Mutex::new(()),
            invalid: Mutex::default(),
            changed: tokio::sync::watch::Sender::new(1),
            sources,
            metrics,
        }
    }

    /// A state with an empty snapshot (generation 0), for a source that delivers the first
    /// one later (the Kubernetes source, after its initial sync). Nothing decides with it: the
    /// gateway is not ready before the first snapshot is installed.
    pub fn empty(sources: PolicySources, metrics: Metrics) -> PolicyState {
        let snapshot = Snapshot::compile(&Default::default(), options(&sources));
        PolicyState {
            current: ArcSwap::from_pointee(snapshot),
            generation: AtomicU64::new(0),
            installing: Mutex::new(()),
            invalid: Mutex::default(),
            changed: tokio::sync::watch::Sender::new(0),
            sources,
            metrics,
        }
    }

    /// Swaps in a new snapshot; returns its generation. The policies that did not change
    /// keep their hit counters; an earlier refused reload is no longer reported.
    pub fn install(&self, mut snapshot: Snapshot) -> u64 {
        let _installing = lock(&self.installing);
        let generation = self.generation.load(Ordering::Relaxed) + 1;
        let previous = self.current.load_full();
        snapshot.carry_hits_from(Some(&previous), generation, SystemTime::now());
        // Under the lock `report` takes first: a report sees the new snapshot only with the
        // refused reload it replaces already gone.
        let mut invalid = lock(&self.invalid);
        self.current.store(Arc::new(snapshot));
        self.generation.store(generation, Ordering::Relaxed);
        invalid.refused.clear();
        drop(invalid);
        self.metrics.snapshot_generation.set(generation as i64);
        self.metrics.reloads.inc();
        self.changed.send_replace(generation);
        generation
    }

    /// The snapshot in force. Cheap; hold it only for one decision.
    #[inline]
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Resolves `changed()` after every snapshot swap.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub fn sources(&self) -> &PolicySources {
        &self.sources
    }

    /// Counts an update that was refused (the current snapshot stays) and keeps its errors
    /// for `/policies` until a later update is installed.
    pub fn refused(&self, errors: &Diagnostics) {
        self.metrics.reload_failures.inc();
        let mut invalid = lock(&self.invalid);
        invalid.refused = found(&invalid.refused, errors, InvalidOutcome::ReloadRefused);
    }

    /// The policy objects the source leaves out for their errors (all of them, replacing
    /// the last list).
    pub fn skipped(&self, errors: &Diagnostics) {
        let mut invalid = lock(&self.invalid);
        invalid.skipped = found(&invalid.skipped, errors, InvalidOutcome::Skipped);
    }

    /// The status of every policy in force and of every invalid one (`/policies`).
    pub fn report(&self) -> Report {
        let invalid = lock(&self.invalid);
        let mut report = self.snapshot().status(Timestamp::now());
        report.invalid = invalid
            .refused
            .iter()
            .chain(&invalid.skipped)
            .cloned()
            .collect();
        report
    }
}

/// The errors that keep policies out, by how.
#[derive(Debug, Default)]
struct InvalidPolicies {
    /// Of the last refused reload, since the last install.
    refused: Vec<Invalid>,
    /// Of the objects the API source skipped.
    skipped: Vec<Invalid>,
}

/// The errors among `errors`; one already in `earlier` keeps its time (`since` is when it
/// was first seen).
fn found(earlier: &[Invalid], errors: &Diagnostics, outcome: InvalidOutcome) -> Vec<Invalid> {
    let now = Timestamp::now();
    errors
        .errors()
        .map(|d| {
            let error = d.to_string();
            let since = earlier
                .iter()
                .find(|e| e.error == error)
                .map_or(now, |e| e.since);
            Invalid {
                object: d.object.clone(),
                error,
                outcome,
                since,
            }
        })
        .collect()
}

/// A poisoned lock only means a report panicked half-way; the lists are still whole.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The engine options the settings ask for.
pub fn options(sources: &PolicySources) -> Options {
    Options {
        default_decision: sources.default_action.into(),
        unknown_source_decision: Some(sources.unknown_source_action.into()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use chokepoint_config::settings::{DefaultAction, Kubernetes, SourceKind};
    use chokepoint_config::{Diagnostic, Severity};
    use std::path::Path;
    use std::time::Duration;

    /// File sources under `dir` (`policies/`, `inventory.yaml`) that reload quickly.
    pub(crate) fn sources(dir: &Path) -> PolicySources {
        PolicySources {
            source: SourceKind::Files,
            kubernetes: Kubernetes {
                kubeconfig: None,
                debounce: Duration::from_millis(20),
                events: Default::default(),
                status: Default::default(),
            },
            paths: vec![dir.join("policies")],
            inventory: vec![dir.join("inventory.yaml")],
            default_action: DefaultAction::Allow,
            unknown_source_action: DefaultAction::Deny,
            recheck_on_reload: false,
            reload_interval: Duration::from_millis(50),
        }
    }

    fn refusal(before: u64) -> Diagnostics {
        Diagnostics(vec![Diagnostic {
            severity: Severity::Error,
            file: "bad.yaml".into(),
            line: 1,
            column: 1,
            object: Some("ClusterNetworkPolicy/bad".into()),
            message: format!("refused before generation {before}"),
        }])
    }

    /// A report taken while a fixed update is installed never shows the new generation with
    /// the refusal it replaced (seen once in an end-to-end run before install and report
    /// took the same lock).
    #[test]
    fn a_report_never_pairs_a_new_generation_with_the_refusal_it_replaced() {
        let sources = sources(Path::new("/nonexistent"));
        let empty = || Snapshot::compile(&Default::default(), options(&sources));
        let state = PolicyState::first(sources.clone(), Metrics::default(), empty());
        let installs = 2_000;
        std::thread::scope(|s| {
            s.spawn(|| {
                for generation in 2..=installs {
                    state.refused(&refusal(generation));
                    state.install(empty());
                }
            });
            loop {
                let report = state.report();
                for invalid in &report.invalid {
                    let expected = format!("refused before generation {}", report.generation + 1);
                    assert!(
                        invalid.error.ends_with(&expected),
                        "generation {} reported with `{}`",
                        report.generation,
                        invalid.error
                    );
                }
                if report.generation == installs {
                    break;
                }
            }
        });
    }
}
