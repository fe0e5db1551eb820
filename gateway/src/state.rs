//! The snapshot in force, and how it is replaced.
//!
//! The data path reads the current [`Snapshot`] with one atomic load (ArcSwap) and never
//! locks. Reloads build a whole new snapshot off the data path and swap it in; an invalid
//! update is refused with its errors logged, and the last good snapshot stays.
//!
//! The snapshots come from a [source](crate::source): files or the Kubernetes API.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use chokepoint_config::settings::PolicySources;

use crate::metrics::Metrics;
use crate::policy::{Options, Snapshot};

/// The current snapshot and its generation.
#[derive(Debug)]
pub struct PolicyState {
    current: ArcSwap<Snapshot>,
    generation: AtomicU64,
    /// Tells live connections that the snapshot changed (for `recheckOnReload`).
    changed: tokio::sync::watch::Sender<u64>,
    sources: PolicySources,
    metrics: Metrics,
}

impl PolicyState {
    /// A state whose first snapshot (generation 1) is `snapshot`.
    pub fn first(sources: PolicySources, metrics: Metrics, snapshot: Snapshot) -> PolicyState {
        metrics.snapshot_generation.set(1);
        PolicyState {
            current: ArcSwap::from_pointee(snapshot),
            generation: AtomicU64::new(1),
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
            changed: tokio::sync::watch::Sender::new(0),
            sources,
            metrics,
        }
    }

    /// Swaps in a new snapshot; returns its generation.
    pub fn install(&self, snapshot: Snapshot) -> u64 {
        self.current.store(Arc::new(snapshot));
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
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

    /// Counts an update that was refused (the current snapshot stays).
    pub fn refused(&self) {
        self.metrics.reload_failures.inc();
    }
}

/// The engine options the settings ask for.
pub fn options(sources: &PolicySources) -> Options {
    Options {
        default_decision: sources.default_action.into(),
        unknown_source_decision: Some(sources.unknown_source_action.into()),
    }
}
