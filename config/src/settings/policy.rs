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
    /// The Events this gateway publishes about policy objects.
    pub events: EventLimits,
    /// Who writes DeveloperNetworkPolicy `status.conditions`.
    pub status: StatusLease,
}

/// The Events this gateway publishes about policy objects (one per object and change): at
/// most `burst` at once, then `per_second`; what waits longer than the queue holds is dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventLimits {
    pub per_second: u32,
    pub burst: u32,
}

/// The Lease that elects the one gateway writing DeveloperNetworkPolicy conditions.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusLease {
    /// Take part in the election (false: this gateway never writes conditions).
    pub write: bool,
    /// The Lease's namespace: the gateway's own (`$POD_NAMESPACE`) unless set.
    pub lease_namespace: String,
    pub lease_name: String,
    /// How long a holder that stops renewing keeps the Lease.
    #[serde(with = "duration::text")]
    pub lease_duration: Duration,
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
    #[serde(default)]
    events: RawEvents,
    #[serde(default)]
    status: RawStatus,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEvents {
    per_second: Option<i64>,
    burst: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawStatus {
    write: Option<bool>,
    lease_namespace: Option<String>,
    lease_name: Option<String>,
    lease_duration: Option<String>,
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
    let events = kubernetes_events(c, raw.kubernetes.events);
    let status = kubernetes_status(c, raw.kubernetes.status);
    Some(PolicySources {
        source: source?,
        kubernetes: Kubernetes {
            kubeconfig: raw.kubernetes.kubeconfig.map(|p| base.join(p)),
            debounce: debounce?,
            events: events?,
            status: status?,
        },
        paths: policy_paths,
        inventory,
        default_action: default_action?,
        unknown_source_action: unknown_source_action?,
        recheck_on_reload: raw.recheck_on_reload.unwrap_or(defaults::RECHECK_ON_RELOAD),
        reload_interval: reload_interval?,
    })
}

impl Default for EventLimits {
    fn default() -> Self {
        let mut c = Checker::new(Vec::new(), crate::UnknownFields::Reject);
        kubernetes_events(&mut c, RawEvents::default()).expect("the defaults are valid")
    }
}

impl Default for StatusLease {
    /// The defaults (the namespace from `$POD_NAMESPACE`).
    fn default() -> Self {
        let mut c = Checker::new(Vec::new(), crate::UnknownFields::Reject);
        kubernetes_status(&mut c, RawStatus::default()).expect("the defaults are valid")
    }
}

fn kubernetes_events(c: &mut Checker, raw: RawEvents) -> Option<EventLimits> {
    let count = |c: &mut Checker, key: &str, v: Option<i64>, default: u32| {
        field::bounded(
            c,
            &format!("/policy/kubernetes/events/{key}"),
            v,
            default.into(),
            1..=10_000,
            "use 1 to 10000",
        )
        .map(|n| n as u32)
    };
    let per_second = count(c, "perSecond", raw.per_second, defaults::EVENTS_PER_SECOND);
    let burst = count(c, "burst", raw.burst, defaults::EVENTS_BURST);
    Some(EventLimits {
        per_second: per_second?,
        burst: burst?,
    })
}

fn kubernetes_status(c: &mut Checker, raw: RawStatus) -> Option<StatusLease> {
    let namespace = raw.lease_namespace.unwrap_or_else(|| {
        std::env::var("POD_NAMESPACE")
            .ok()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| defaults::LEASE_NAMESPACE.to_owned())
    });
    let name = raw
        .lease_name
        .unwrap_or_else(|| defaults::LEASE_NAME.to_owned());
    let namespace_ok = object_name(
        c,
        "/policy/kubernetes/status/leaseNamespace",
        &namespace,
        63,
    );
    let name_ok = object_name(c, "/policy/kubernetes/status/leaseName", &name, 253);
    let lease_duration = duration::setting(
        c,
        "/policy/kubernetes/status/leaseDuration",
        raw.lease_duration.as_deref(),
        Duration::from_millis(defaults::LEASE_DURATION_MS),
        false,
    );
    let lease_duration = lease_duration.filter(|d| {
        let whole = *d >= Duration::from_secs(1);
        if !whole {
            c.error(
                "/policy/kubernetes/status/leaseDuration",
                "a Lease is held in whole seconds; use at least 1s",
            );
        }
        whole
    });
    (namespace_ok && name_ok).then_some(())?;
    let lease_duration = lease_duration?;
    Some(StatusLease {
        write: raw.write.unwrap_or(defaults::STATUS_WRITE),
        lease_namespace: namespace,
        lease_name: name,
        lease_duration,
    })
}

/// A Kubernetes object name (DNS-1123: lowercase letters, digits, `-` and `.`, starting and
/// ending with a letter or digit), at most `max` long.
fn object_name(c: &mut Checker, p: &str, name: &str, max: usize) -> bool {
    let edge = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let ok = name.len() <= max
        && edge(name.as_bytes().first())
        && edge(name.as_bytes().last())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if !ok {
        c.error(
            p,
            format!("`{name}` is no Kubernetes name: lowercase letters, digits, `-` and `.`, at most {max}"),
        );
    }
    ok
}
