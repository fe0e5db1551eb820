//! Names on the data path: the DNS names a flow's destination is known as (what the source's
//! namespace resolved through the DNS proxy, from its cache), and the check of the name a TCP
//! connection shows (TLS SNI, HTTP Host) when a `domainNames` rule accepted it by name.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use chokepoint_config::settings::DefaultAction;
use chokepoint_dns::Cache;

use crate::audit::AuditReason;
use crate::l7::peek::Shown;
use crate::metrics::NameCheckLabel;
use crate::policy::{Flow, Snapshot};

/// The names pods of `src`'s namespace resolved to `dst` that have not expired; empty for a
/// source that is no pod, without a cache (DNS off) or when `only_if_used` and no rule of the
/// snapshot has `domainNames` (then the engine needs none and the cache is not consulted).
pub fn lookup(
    cache: Option<&Cache>,
    snapshot: &Snapshot,
    src: IpAddr,
    dst: IpAddr,
    only_if_used: bool,
) -> Vec<Arc<str>> {
    let Some(cache) = cache else {
        return Vec::new();
    };
    if only_if_used && !snapshot.uses_domain_names() {
        return Vec::new();
    }
    match snapshot.source_namespace(src) {
        Some(namespace) => cache.names_for(namespace, dst, Instant::now()),
        None => Vec::new(),
    }
}

/// The names as the engine takes them.
pub fn as_strs(names: &[Arc<str>]) -> Vec<&str> {
    names.iter().map(|n| &**n).collect()
}

/// Checks the name a connection showed against the policy, for a flow whose verdict was an
/// Accept by name ([`Verdict::by_domain_names`](crate::policy::Verdict::by_domain_names)).
///
/// The flow is decided again as if the shown name were the destination's only name:
/// - denied → the name is not one the pod may reach: `sni_mismatch` / `host_mismatch`;
/// - allowed by address → the name does not matter;
/// - allowed by name → the pod's namespace must have resolved *that* name to this IP, else
///   it is domain fronting (an allowed name sent to another name's address): `not_resolved`.
///
/// No name shown (or only ECH's outer one) → `fqdn.withoutName` decides.
pub fn check(
    snapshot: &Snapshot,
    cache: &Cache,
    flow: &Flow<'_>,
    shown: &Shown,
    without_name: DefaultAction,
) -> NameCheckLabel {
    let (name, mismatch) = match shown {
        Shown::Sni(n) => (n.as_str(), NameCheckLabel::SniMismatch),
        Shown::Host(n) => (n.as_str(), NameCheckLabel::HostMismatch),
        Shown::Ech { .. } | Shown::Nothing => {
            return match without_name {
                DefaultAction::Allow => NameCheckLabel::NoNameAllowed,
                DefaultAction::Deny => NameCheckLabel::NoNameDenied,
            };
        }
    };
    let as_named = snapshot.evaluate(&Flow {
        names: &[name],
        ..*flow
    });
    if !as_named.is_allowed() {
        return mismatch;
    }
    if !as_named.by_domain_names {
        return NameCheckLabel::Passed;
    }
    let resolved = snapshot
        .source_namespace(flow.src)
        .is_some_and(|ns| cache.resolved(ns, name, flow.dst, Instant::now()));
    if resolved {
        NameCheckLabel::Passed
    } else {
        NameCheckLabel::NotResolved
    }
}

/// The audit reason of a check that refuses the connection; `None` when it may go on.
pub fn denial(result: NameCheckLabel) -> Option<AuditReason> {
    match result {
        NameCheckLabel::Passed | NameCheckLabel::NoNameAllowed => None,
        NameCheckLabel::SniMismatch => Some(AuditReason::SNI_MISMATCH),
        NameCheckLabel::HostMismatch => Some(AuditReason::HOST_MISMATCH),
        NameCheckLabel::NotResolved => Some(AuditReason::NOT_RESOLVED),
        NameCheckLabel::NoNameDenied => Some(AuditReason::NO_NAME),
    }
}

/// `(sni, host)` for the audit record.
pub fn shown_fields(shown: &Shown) -> (Option<&str>, Option<&str>) {
    match shown {
        Shown::Sni(n) => (Some(n), None),
        Shown::Ech { outer } => (outer.as_deref(), None),
        Shown::Host(n) => (None, Some(n)),
        Shown::Nothing => (None, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chokepoint_config::model::Protocol;
    use chokepoint_config::settings::Dns;
    use chokepoint_config::{UnknownFields, load_str};
    use chokepoint_dns::{CacheLimits, Metrics};

    use crate::policy::Options;

    const WORLD: &str = "\
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Pod
metadata: {namespace: shop, name: web}
status: {podIP: 10.244.1.10, podIPs: [{ip: 10.244.1.10}]}
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: sites}
spec:
  tier: Admin
  priority: 10
  subject: {namespaces: {}}
  egress:
  - {name: stripe, action: Accept, to: [{domainNames: [api.stripe.com]}]}
  - {name: docs, action: Accept, to: [{domainNames: ['*.example.com']}]}
  - {name: lab, action: Accept, to: [{networks: [198.51.100.0/24]}]}
  - {name: rest, action: Deny, to: [{networks: [0.0.0.0/0]}]}
";

    fn setup() -> (Snapshot, Cache) {
        let loaded = load_str(
            std::path::Path::new("world.yaml"),
            WORLD,
            UnknownFields::Reject,
        );
        assert!(!loaded.diagnostics.has_errors(), "{}", loaded.diagnostics);
        let snapshot = Snapshot::compile(&loaded.world, Options::default());
        let cache = Cache::new(
            CacheLimits::from_settings(&crate::app::dns_settings(&Dns::default())),
            &Metrics::default(),
        );
        let now = Instant::now();
        cache.insert(
            "shop",
            "api.stripe.com",
            &["192.0.2.1".parse().unwrap()],
            60,
            now,
        );
        cache.insert(
            "shop",
            "www.example.com",
            &["192.0.2.2".parse().unwrap()],
            60,
            now,
        );
        cache.insert(
            "shop",
            "cdn.example.com",
            &["192.0.2.1".parse().unwrap()],
            60,
            now,
        );
        (snapshot, cache)
    }

    fn flow<'a>(dst: &str, names: &'a [&'a str]) -> Flow<'a> {
        Flow {
            src: "10.244.1.10".parse().unwrap(),
            dst: dst.parse().unwrap(),
            protocol: Protocol::Tcp,
            port: 443,
            names,
            addressed: None,
        }
    }

    #[test]
    fn shown_names_are_checked_against_policy_and_resolution() {
        let (snapshot, cache) = setup();
        let allow = DefaultAction::Allow;
        let sni = |n: &str| Shown::Sni(n.to_owned());
        let names = ["api.stripe.com", "cdn.example.com"];
        let to_shared = flow("192.0.2.1", &names);
        let v = snapshot.evaluate(&to_shared);
        assert!(v.is_allowed() && v.by_domain_names);
        let cases = [
            (sni("api.stripe.com"), NameCheckLabel::Passed),
            // Another allowed name resolved to the same (shared) IP: allowed by its own rule.
            (sni("cdn.example.com"), NameCheckLabel::Passed),
            // Allowed by pattern, but resolved to another IP: fronting.
            (sni("www.example.com"), NameCheckLabel::NotResolved),
            // Allowed by pattern, never resolved at all.
            (sni("new.example.com"), NameCheckLabel::NotResolved),
            (sni("evil.test"), NameCheckLabel::SniMismatch),
            (
                Shown::Host("evil.test".into()),
                NameCheckLabel::HostMismatch,
            ),
            (Shown::Host("api.stripe.com".into()), NameCheckLabel::Passed),
            (Shown::Nothing, NameCheckLabel::NoNameAllowed),
            (
                Shown::Ech {
                    outer: Some("api.stripe.com".into()),
                },
                NameCheckLabel::NoNameAllowed,
            ),
        ];
        for (shown, want) in cases {
            assert_eq!(
                check(&snapshot, &cache, &to_shared, &shown, allow),
                want,
                "{shown:?}"
            );
        }
        assert_eq!(
            check(
                &snapshot,
                &cache,
                &to_shared,
                &Shown::Nothing,
                DefaultAction::Deny
            ),
            NameCheckLabel::NoNameDenied
        );
        // A name that is allowed by address whatever it says.
        let lab = flow("198.51.100.5", &["api.stripe.com"]);
        assert_eq!(
            check(&snapshot, &cache, &lab, &sni("anything.test"), allow),
            NameCheckLabel::Passed
        );
    }

    #[test]
    fn lookups_are_per_namespace_and_skipped_when_no_rule_uses_names() {
        let (snapshot, cache) = setup();
        let src = "10.244.1.10".parse().unwrap();
        let shared = "192.0.2.1".parse().unwrap();
        let names = lookup(Some(&cache), &snapshot, src, shared, true);
        assert_eq!(as_strs(&names), ["api.stripe.com", "cdn.example.com"]);
        let unknown = "10.9.9.9".parse().unwrap();
        assert!(lookup(Some(&cache), &snapshot, unknown, shared, false).is_empty());
        assert!(lookup(None, &snapshot, src, shared, false).is_empty());
        let plain = Snapshot::compile(
            &load_str(
                std::path::Path::new("w.yaml"),
                WORLD.split("---\napiVersion: policy").next().unwrap(),
                UnknownFields::Reject,
            )
            .world,
            Options::default(),
        );
        assert!(!plain.uses_domain_names());
        assert!(lookup(Some(&cache), &plain, src, shared, true).is_empty());
        assert_eq!(lookup(Some(&cache), &plain, src, shared, false).len(), 2);
    }

    #[test]
    fn denials_map_to_audit_reasons() {
        assert_eq!(denial(NameCheckLabel::Passed), None);
        assert_eq!(denial(NameCheckLabel::NoNameAllowed), None);
        assert_eq!(
            denial(NameCheckLabel::NotResolved),
            Some(AuditReason::NOT_RESOLVED)
        );
        assert_eq!(
            denial(NameCheckLabel::NoNameDenied),
            Some(AuditReason::NO_NAME)
        );
        assert_eq!(
            shown_fields(&Shown::Ech {
                outer: Some("public.example".into())
            }),
            (Some("public.example"), None)
        );
    }
}
