//! `policy:`: where policies and the inventory come from, and the verdicts no policy makes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::field::{self, Choice};
use super::{defaults, duration};
use crate::compile::Checker;

/// Allow or deny, for the decisions that no policy makes. Also the CLI's `--default-action`
/// (which takes the same [`Choice::NAMES`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DefaultAction {
    Allow,
    Deny,
}

impl Choice for DefaultAction {
    const WHAT: &'static str = "action";
    const NAMES: &'static [(&'static str, Self)] = &[
        ("allow", DefaultAction::Allow),
        ("deny", DefaultAction::Deny),
    ];
}

/// Where policies and the inventory come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// YAML/JSON files and directories (`paths`, `inventory`), reloaded on change.
    Files,
    /// The Kubernetes API (watched), as in a DaemonSet.
    Kubernetes,
}

impl Choice for SourceKind {
    const WHAT: &'static str = "policy source";
    const NAMES: &'static [(&'static str, Self)] = &[
        ("files", SourceKind::Files),
        ("kubernetes", SourceKind::Kubernetes),
    ];
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicySources {
    /// Files, or the Kubernetes API.
    pub source: SourceKind,
    /// With `source: kubernetes`.
    pub kubernetes: Kubernetes,
    /// Policy files and directories (resolved against the settings file's directory).
    pub paths: Vec<PathBuf>,
    /// Inventory files and directories.
    pub inventory: Vec<PathBuf>,
    /// The verdict when no tier decides.
    pub default_action: DefaultAction,
    /// The verdict for a source IP that is no known pod.
    pub unknown_source_action: DefaultAction,
    /// Re-check established connections against a new snapshot (and close the denied ones).
    pub recheck_on_reload: bool,
    /// How often the files are checked for changes (SIGHUP reloads at once).
    #[serde(with = "duration::text")]
    pub reload_interval: Duration,
}

/// How the Kubernetes source connects and rebuilds.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Kubernetes {
    /// A kubeconfig file; unset: in-cluster (the pod's service account), else `$KUBECONFIG`.
    pub kubeconfig: Option<PathBuf>,
    /// How long changes gather before the snapshot is rebuilt.
    #[serde(with = "duration::text")]
    pub debounce: Duration,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RawPolicy {
    source: Option<String>,
    #[serde(default)]
    kubernetes: RawKubernetes,
    paths: Option<Vec<String>>,
    inventory: Option<Vec<String>>,
    default_action: Option<String>,
    unknown_source_action: Option<String>,
    recheck_on_reload: Option<bool>,
    reload_interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawKubernetes {
    kubeconfig: Option<String>,
    debounce: Option<String>,
}

/// Relative paths resolve against `base`, the settings file's directory.
pub(super) fn validate(c: &mut Checker, raw: RawPolicy, base: &Path) -> Option<PolicySources> {
    let source = field::choice(
        c,
        "/policy/source",
        raw.source.as_deref(),
        defaults::POLICY_SOURCE,
    );
    let from_files = source != Some(SourceKind::Kubernetes);
    let paths = |c: &mut Checker, p: &str, v: Option<Vec<String>>| -> Vec<PathBuf> {
        let given = v.is_some();
        let v = v.unwrap_or_default();
        if !from_files && given {
            c.error(
                p,
                "files are read with `source: files` only; with `source: kubernetes` policies and the inventory come from the API server",
            );
        } else if from_files && v.is_empty() {
            c.error(
                p,
                format!(
                    "`{}` needs at least one file or directory",
                    p.rsplit('/').next().unwrap_or(p)
                ),
            );
        }
        v.iter().map(|s| base.join(s)).collect()
    };
    let policy_paths = paths(c, "/policy/paths", raw.paths);
    let inventory = paths(c, "/policy/inventory", raw.inventory);
    let default_action = field::choice(
        c,
        "/policy/defaultAction",
        raw.default_action.as_deref(),
        defaults::DEFAULT_ACTION,
    );
    let unknown_source_action = field::choice(
        c,
        "/policy/unknownSourceAction",
        raw.unknown_source_action.as_deref(),
        defaults::UNKNOWN_SOURCE_ACTION,
    );
    let reload_interval = duration::setting(
        c,
        "/policy/reloadInterval",
        raw.reload_interval.as_deref(),
        Duration::from_millis(defaults::RELOAD_INTERVAL_MS),
        false,
    );
    let debounce = duration::setting(
        c,
        "/policy/kubernetes/debounce",
        raw.kubernetes.debounce.as_deref(),
        Duration::from_millis(defaults::KUBERNETES_DEBOUNCE_MS),
        false,
    );
    Some(PolicySources {
        source: source?,
        kubernetes: Kubernetes {
            kubeconfig: raw.kubernetes.kubeconfig.map(|p| base.join(p)),
            debounce: debounce?,
        },
        paths: policy_paths,
        inventory,
        default_action: default_action?,
        unknown_source_action: unknown_source_action?,
        recheck_on_reload: raw.recheck_on_reload.unwrap_or(defaults::RECHECK_ON_RELOAD),
        reload_interval: reload_interval?,
    })
}
