//! `flows:`: the log of allowed flows (off by default): where it goes, which source namespaces
//! it covers, how long a window aggregates and how many distinct flows a window itemizes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer};

use super::audit::AuditSink;
use super::defaults::flows as d;
use super::{duration, field};
use crate::api::LabelSelector;
use crate::compile::Checker;
use crate::model::{Labels, Selector};

/// The validated `flows:` section.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Flows {
    pub enabled: bool,
    pub sink: AuditSink,
    /// With `sink: file`.
    pub path: Option<PathBuf>,
    pub max_bytes: u64,
    pub max_files: u32,
    /// How long one record aggregates the flows of its key.
    #[serde(with = "duration::text")]
    pub window: Duration,
    /// Distinct keys one window itemizes; flows of further keys are counted in the window's
    /// `unitemized` line.
    pub max_keys: usize,
    /// Which source pods' flows are logged.
    pub namespaces: NamespaceFilter,
}

/// Which source namespaces the flow log covers.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum NamespaceFilter {
    /// Every namespace (neither `namespaces` nor `namespaceSelector` written).
    #[default]
    All,
    /// The namespaces named in `namespaces`.
    Names(Vec<String>),
    /// The namespaces whose labels `namespaceSelector` matches.
    Selector(#[serde(serialize_with = "as_text")] Selector),
}

impl NamespaceFilter {
    /// Whether flows from pods of the namespace `name` (labelled `labels`) are logged.
    pub fn covers(&self, name: &str, labels: &Labels) -> bool {
        match self {
            NamespaceFilter::All => true,
            NamespaceFilter::Names(names) => names.iter().any(|n| n == name),
            NamespaceFilter::Selector(s) => s.matches(labels),
        }
    }
}

fn as_text<S: Serializer>(s: &Selector, out: S) -> Result<S::Ok, S::Error> {
    out.collect_str(s)
}

impl Default for Flows {
    /// What a settings file without a `flows:` section gets: off.
    fn default() -> Self {
        let mut c = Checker::new(Vec::new(), crate::UnknownFields::Reject);
        validate(&mut c, RawFlows::default(), Path::new("/")).expect("the defaults are valid")
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RawFlows {
    enabled: Option<bool>,
    sink: Option<String>,
    path: Option<String>,
    max_bytes: Option<i64>,
    max_files: Option<i64>,
    window: Option<String>,
    max_keys: Option<i64>,
    namespaces: Option<Vec<String>>,
    namespace_selector: Option<LabelSelector>,
}

/// A relative `path` resolves against `base`, the settings file's directory.
pub(super) fn validate(c: &mut Checker, raw: RawFlows, base: &Path) -> Option<Flows> {
    let enabled = raw.enabled.unwrap_or(false);
    let file = super::audit::log_file(
        c,
        "/flows",
        super::audit::RawLogFile {
            sink: raw.sink,
            path: raw.path,
            max_bytes: raw.max_bytes,
            max_files: raw.max_files,
        },
        base,
    );
    let window = duration::setting(c, "/flows/window", raw.window.as_deref(), d::WINDOW, false);
    let max_keys = field::count(
        c,
        "/flows/maxKeys",
        raw.max_keys,
        d::MAX_KEYS,
        1,
        " (distinct flows one window itemizes)",
    );
    let namespaces = namespace_filter(c, raw.namespaces, raw.namespace_selector);
    let (sink, path, max_bytes, max_files) = file?;
    Some(Flows {
        enabled,
        sink,
        path,
        max_bytes,
        max_files,
        window: window?,
        max_keys: max_keys?,
        namespaces: namespaces?,
    })
}

fn namespace_filter(
    c: &mut Checker,
    names: Option<Vec<String>>,
    selector: Option<LabelSelector>,
) -> Option<NamespaceFilter> {
    match (names, selector) {
        (None, None) => Some(NamespaceFilter::All),
        (Some(_), Some(_)) => {
            c.error(
                "/flows/namespaceSelector",
                "write `namespaces` or `namespaceSelector`, not both",
            );
            None
        }
        (Some(names), None) => {
            if names.is_empty() {
                c.error(
                    "/flows/namespaces",
                    "an empty list would log nothing; leave `namespaces` out to log every namespace",
                );
                return None;
            }
            let mut ok = true;
            for (i, n) in names.iter().enumerate() {
                if !crate::compile::is_rfc1123_label(n) {
                    c.error(
                        format!("/flows/namespaces/{i}"),
                        format!("`{n}` is not a namespace name (lower-case letters, digits and `-`, at most 63)"),
                    );
                    ok = false;
                }
            }
            ok.then_some(NamespaceFilter::Names(names))
        }
        (None, Some(s)) => crate::compile::selector(c, "/flows/namespaceSelector", &s)
            .map(NamespaceFilter::Selector),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::settings::{GatewaySettings, assert_error_at};

    const BASE: &str = "capture: {interfaces: [\"ckp*\"]}\npolicy: {paths: [p], inventory: [i]}\n";

    fn load(text: &str) -> Result<GatewaySettings, crate::Diagnostics> {
        GatewaySettings::from_str(Path::new("/etc/chokepoint/gateway.yaml"), text)
    }

    #[test]
    fn the_flow_log_is_off_by_default_and_covers_every_namespace_when_on() {
        let s = load(BASE).unwrap();
        assert_eq!(s.flows, Flows::default());
        assert!(!s.flows.enabled);
        assert_eq!(s.flows.window, Duration::from_secs(60));
        assert_eq!(s.flows.max_keys, 10_000);
        assert_eq!(s.flows.sink, AuditSink::Stdout);
        let on = load(&format!(
            "{BASE}flows: {{enabled: true, sink: file, path: flows.log, window: 10s}}\n"
        ))
        .unwrap();
        assert!(on.flows.enabled);
        assert_eq!(
            on.flows.path,
            Some(PathBuf::from("/etc/chokepoint/flows.log"))
        );
        assert_eq!(on.flows.window, Duration::from_secs(10));
        assert!(on.flows.namespaces.covers("any", &BTreeMap::new()));
    }

    #[test]
    fn namespaces_are_chosen_by_name_or_by_label() {
        let by_name = load(&format!("{BASE}flows:\n  namespaces: [shop, web-2]\n"))
            .unwrap()
            .flows
            .namespaces;
        let none = BTreeMap::new();
        assert!(by_name.covers("shop", &none));
        assert!(!by_name.covers("other", &none));
        let by_label = load(&format!(
            "{BASE}flows:\n  namespaceSelector: {{matchLabels: {{rollout: watch}}}}\n"
        ))
        .unwrap()
        .flows
        .namespaces;
        let labelled = BTreeMap::from([("rollout".to_owned(), "watch".to_owned())]);
        assert!(by_label.covers("any", &labelled));
        assert!(!by_label.covers("any", &none));
    }

    #[test]
    fn every_flows_mistake_is_reported_at_its_line() {
        let err = load(&format!(
            "{BASE}flows:\n  sink: file\n  window: 0s\n  maxKeys: 0\n  namespaces: [Shop]\n  colour: red\n"
        ))
        .unwrap_err();
        assert_error_at(&err, 3, "`path` is required with `sink: file`");
        assert_error_at(&err, 5, "`0s` must be longer than zero");
        assert_error_at(&err, 6, "0 is too small; use at least 1");
        assert_error_at(&err, 7, "`Shop` is not a namespace name");
        assert_error_at(&err, 8, "unknown field `colour`");
        let err = load(&format!(
            "{BASE}flows:\n  namespaces: [a]\n  namespaceSelector: {{}}\n"
        ))
        .unwrap_err();
        assert_error_at(&err, 5, "not both");
        let err = load(&format!("{BASE}flows:\n  namespaces: []\n")).unwrap_err();
        assert_error_at(&err, 4, "leave `namespaces` out");
        let err = load(&format!(
            "{BASE}flows:\n  namespaceSelector:\n    matchExpressions: [{{key: a, operator: Near}}]\n"
        ))
        .unwrap_err();
        assert!(err.to_string().contains("Near"), "{err}");
    }
}
