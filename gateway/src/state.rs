//! The snapshot in force, and how it is replaced.
//!
//! The data path reads the current [`Snapshot`] with one atomic load (ArcSwap) and never
//! locks. Reloads build a whole new snapshot off the data path and swap it in; an invalid
//! update is refused with its errors logged, and the last good snapshot stays.
//!
//! The source is files ([`PolicyState::load`], [`watch`]) or the Kubernetes API
//! ([`PolicyState::empty`], then [`crate::cluster`] installs the snapshots it builds).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use chokepoint_config::settings::PolicySources;
use chokepoint_config::{Diagnostics, UnknownFields, load_paths};

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
    /// Loads the first snapshot; fails with every error when the files are invalid.
    pub fn load(sources: PolicySources, metrics: Metrics) -> Result<PolicyState, Diagnostics> {
        let snapshot = build(&sources)?;
        metrics.snapshot_generation.set(1);
        Ok(PolicyState {
            current: ArcSwap::from_pointee(snapshot),
            generation: AtomicU64::new(1),
            changed: tokio::sync::watch::Sender::new(1),
            sources,
            metrics,
        })
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

    /// Reads the files again and swaps in the new snapshot; on errors keeps the current one.
    pub fn reload(&self) -> Result<u64, Diagnostics> {
        match build(&self.sources) {
            Ok(snapshot) => Ok(self.install(snapshot)),
            Err(errors) => {
                self.metrics.reload_failures.inc();
                Err(errors)
            }
        }
    }
}

fn build(sources: &PolicySources) -> Result<Snapshot, Diagnostics> {
    let mut paths: Vec<PathBuf> = sources.paths.clone();
    paths.extend(sources.inventory.iter().cloned());
    let loaded = load_paths(&paths, UnknownFields::Reject);
    for w in loaded.diagnostics.warnings() {
        tracing::warn!(target: "policy", "{w}");
    }
    if loaded.diagnostics.has_errors() {
        return Err(Diagnostics(loaded.diagnostics.errors().cloned().collect()));
    }
    Ok(Snapshot::compile(&loaded.world, options(sources)))
}

/// The engine options the settings ask for.
pub fn options(sources: &PolicySources) -> Options {
    Options {
        default_decision: sources.default_action.into(),
        unknown_source_decision: Some(sources.unknown_source_action.into()),
    }
}

/// What the files looked like: every file's path, size and modification time. A different
/// fingerprint means something changed (an edit, a new file, a ConfigMap symlink swap).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fingerprint(Vec<(PathBuf, u64, Option<SystemTime>)>);

impl Fingerprint {
    pub fn of(sources: &PolicySources) -> Fingerprint {
        let mut entries = Vec::new();
        for p in sources.paths.iter().chain(&sources.inventory) {
            collect(p, &mut entries, 0);
        }
        entries.sort();
        Fingerprint(entries)
    }
}

fn collect(path: &PathBuf, out: &mut Vec<(PathBuf, u64, Option<SystemTime>)>, depth: usize) {
    // Follows symlinks (ConfigMap mounts are links); the depth bound stops link loops.
    let Ok(meta) = std::fs::metadata(path) else {
        out.push((path.clone(), u64::MAX, None));
        return;
    };
    if meta.is_dir() {
        if depth > 16 {
            return;
        }
        if let Ok(rd) = std::fs::read_dir(path) {
            for e in rd.flatten() {
                collect(&e.path(), out, depth + 1);
            }
        }
    } else {
        out.push((path.clone(), meta.len(), meta.modified().ok()));
    }
}

/// Reloads when the files change (polled) or when SIGHUP arrives; runs until the process ends.
pub async fn watch(state: Arc<PolicyState>) {
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(target: "policy", "SIGHUP reloads are off: {e}");
            None
        }
    };
    let mut seen = Fingerprint::of(state.sources());
    let mut tick = tokio::time::interval(state.sources().reload_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let forced = tokio::select! {
            _ = tick.tick() => false,
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
        };
        let now = Fingerprint::of(state.sources());
        if !forced && now == seen {
            continue;
        }
        seen = now;
        let state = state.clone();
        // Compiling a large world takes a while: keep it off the runtime's workers.
        let result = tokio::task::spawn_blocking(move || state.reload()).await;
        match result {
            Ok(Ok(generation)) => {
                tracing::info!(target: "policy", generation, forced, "snapshot reloaded")
            }
            Ok(Err(errors)) => {
                tracing::error!(target: "policy", errors = errors.0.len(), "reload refused; the previous snapshot stays in force:\n{errors}")
            }
            Err(e) => tracing::error!(target: "policy", "reload task failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use chokepoint_config::settings::DefaultAction;

    use super::*;
    use std::time::Duration;

    fn sources(dir: &std::path::Path) -> PolicySources {
        PolicySources {
            source: chokepoint_config::settings::SourceKind::Files,
            kubernetes: chokepoint_config::settings::Kubernetes {
                kubeconfig: None,
                debounce: Duration::from_millis(20),
            },
            paths: vec![dir.join("policies")],
            inventory: vec![dir.join("inventory.yaml")],
            default_action: DefaultAction::Allow,
            unknown_source_action: DefaultAction::Deny,
            recheck_on_reload: false,
            reload_interval: Duration::from_millis(50),
        }
    }

    const CNP: &str = "apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata: {name: a}\nspec:\n  tier: Admin\n  priority: 1\n  subject: {namespaces: {}}\n  egress: [{action: Deny, to: [{networks: [0.0.0.0/0]}]}]\n";

    #[test]
    fn reload_swaps_valid_updates_and_keeps_the_last_good_one() {
        let dir = std::env::temp_dir().join(format!("chokepoint-state-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("policies")).unwrap();
        std::fs::write(
            dir.join("inventory.yaml"),
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n",
        )
        .unwrap();
        std::fs::write(dir.join("policies/p.yaml"), CNP).unwrap();
        let metrics = Metrics::default();
        let state = PolicyState::load(sources(&dir), metrics.clone()).unwrap();
        assert_eq!(state.snapshot().counts().0, 1);
        let before = Fingerprint::of(state.sources());

        std::fs::write(dir.join("policies/p.yaml"), "kind: ClusterNetworkPolicy\n").unwrap();
        assert_ne!(Fingerprint::of(state.sources()), before);
        assert!(state.reload().is_err());
        assert_eq!(state.generation(), 1);
        assert_eq!(
            state.snapshot().counts().0,
            1,
            "the last good snapshot stays"
        );
        assert_eq!(metrics.reload_failures.get(), 1);

        std::fs::remove_file(dir.join("policies/p.yaml")).unwrap();
        assert_eq!(state.reload().unwrap(), 2);
        assert_eq!(state.snapshot().counts().0, 0);
        assert_eq!(metrics.snapshot_generation.get(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
