//! The file source: policies and inventory read from `policy.paths` and
//! `policy.inventory`, compiled into the first snapshot ([`load`]) and again whenever the
//! files change or SIGHUP arrives ([`watch`]). An invalid update is refused with its errors
//! logged, and the last good snapshot stays.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use chokepoint_config::settings::PolicySources;
use chokepoint_config::{Diagnostics, UnknownFields, load_paths};

use crate::metrics::Metrics;
use crate::policy::Snapshot;
use crate::state::{PolicyState, options};

/// Loads the first snapshot; fails with every error when the files are invalid.
pub fn load(sources: PolicySources, metrics: Metrics) -> Result<PolicyState, Diagnostics> {
    let snapshot = compile(&sources)?;
    Ok(PolicyState::first(sources, metrics, snapshot))
}

/// Reads the files again and swaps in the new snapshot; on errors keeps the current one.
pub fn reload(state: &PolicyState) -> Result<u64, Diagnostics> {
    match compile(state.sources()) {
        Ok(snapshot) => Ok(state.install(snapshot)),
        Err(errors) => {
            state.refused(&errors);
            Err(errors)
        }
    }
}

fn compile(sources: &PolicySources) -> Result<Snapshot, Diagnostics> {
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
        let result = tokio::task::spawn_blocking(move || reload(&state)).await;
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
    use super::*;
    use crate::state::tests::sources;

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
        let state = load(sources(&dir), metrics.clone()).unwrap();
        assert_eq!(state.snapshot().counts().cluster_policies, 1);
        let before = Fingerprint::of(state.sources());

        std::fs::write(dir.join("policies/p.yaml"), "kind: ClusterNetworkPolicy\n").unwrap();
        assert_ne!(Fingerprint::of(state.sources()), before);
        assert!(reload(&state).is_err());
        assert_eq!(state.generation(), 1);
        assert_eq!(
            state.snapshot().counts().cluster_policies,
            1,
            "the last good snapshot stays"
        );
        assert_eq!(metrics.reload_failures.get(), 1);

        std::fs::remove_file(dir.join("policies/p.yaml")).unwrap();
        assert_eq!(reload(&state).unwrap(), 2);
        assert_eq!(state.snapshot().counts().cluster_policies, 0);
        assert_eq!(metrics.snapshot_generation.get(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
