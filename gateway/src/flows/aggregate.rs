//! Counting flows per key for one window (the aggregator task's state, without I/O).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use chokepoint_config::settings::NamespaceFilter;
use chokepoint_dns::Cache;

use super::log::FlowEvent;
use super::record::{FlowDestination, FlowRecord, FlowSource, Unitemized, UnitemizedCounts};
use crate::audit::{AuditReason, DecidedBy, DestinationPod, ServiceName, Timestamp, pod_identity};
use crate::policy::Decision;
use crate::proxy::names;

/// What makes two flows one record.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    source: FlowSource,
    destination: FlowDestination,
    verdict: Decision,
    reason: AuditReason,
    decided_by: DecidedBy,
}

/// What [`Aggregator::observe`] did with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Observed {
    /// The source's namespace is not covered by `flows.namespaces`.
    NotCovered,
    Itemized,
    /// Counted in the window's `unitemized.flows`: the key bound was reached.
    Unitemized,
}

/// One window's counts.
pub(super) struct Aggregator {
    node: Arc<str>,
    filter: NamespaceFilter,
    /// For names of destinations the engine did not need names for.
    names: Option<Arc<Cache>>,
    max_keys: usize,
    window_start: Timestamp,
    counts: HashMap<Key, u64>,
    unitemized: u64,
}

/// A closed window's lines: its records, and its unitemized counts when there are any.
pub(super) struct Closed {
    pub records: Vec<FlowRecord>,
    pub unitemized: Option<Unitemized>,
}

impl Aggregator {
    pub fn new(
        node: Arc<str>,
        filter: NamespaceFilter,
        names: Option<Arc<Cache>>,
        max_keys: usize,
        now: Timestamp,
    ) -> Aggregator {
        Aggregator {
            node,
            filter,
            names,
            max_keys: max_keys.max(1),
            window_start: now,
            counts: HashMap::new(),
            unitemized: 0,
        }
    }

    /// Counts one allowed flow under its key.
    pub fn observe(&mut self, event: &FlowEvent) -> Observed {
        let snapshot = &*event.snapshot;
        let src = event.src.to_canonical();
        let source_pod = snapshot.pod_by_ip(src);
        let covered = match source_pod {
            Some(p) => {
                let ns = snapshot.pod_namespace(p);
                self.filter.covers(&ns.name, &ns.labels)
            }
            None => matches!(self.filter, NamespaceFilter::All),
        };
        if !covered {
            return Observed::NotCovered;
        }
        let key = self.key(event, src);
        if let Some(n) = self.counts.get_mut(&key) {
            *n += 1;
            return Observed::Itemized;
        }
        if self.counts.len() >= self.max_keys {
            self.unitemized += 1;
            return Observed::Unitemized;
        }
        self.counts.insert(key, 1);
        Observed::Itemized
    }

    fn key(&self, event: &FlowEvent, src: IpAddr) -> Key {
        let snapshot = &*event.snapshot;
        let dst_ip = event.dst.ip().to_canonical();
        let mut found = event.names.clone();
        if found.is_empty() {
            let named = event.addressed.map_or(dst_ip, |a| a.ip().to_canonical());
            found = names::lookup(self.names.as_deref(), snapshot, src, named, false);
        }
        let mut names: Vec<String> = found.iter().map(|n| n.to_string()).collect();
        names.sort();
        names.dedup();
        let (source_namespace, source_pod) = pod_identity(snapshot, src);
        let dst_pod = DestinationPod::at(snapshot, dst_ip);
        Key {
            source: FlowSource {
                ip: src,
                namespace: source_namespace,
                pod: source_pod,
            },
            destination: FlowDestination {
                // Known by its names, a destination stands for every address they have.
                ip: (dst_pod.pod.is_some() || names.is_empty()).then_some(dst_ip),
                port: event.dst.port(),
                namespace: dst_pod.namespace,
                pod: dst_pod.pod,
                labels: dst_pod.labels,
                protocol: event.protocol,
                names,
                service: event
                    .addressed
                    .and_then(|a| ServiceName::at(snapshot, a, event.protocol)),
                cluster_ip: event.addressed.map(|a| a.ip().to_canonical()),
            },
            verdict: event.verdict.decision,
            reason: event.verdict.reason.into(),
            decided_by: DecidedBy::resolve(snapshot, &event.verdict),
        }
    }

    /// Ends the window at `now`: its records, and the flows without one (`dropped`: events
    /// the data path could not hand over during it). Starts the next window.
    pub fn close(&mut self, now: Timestamp, dropped: u64) -> Closed {
        let window_start = std::mem::replace(&mut self.window_start, now);
        let records = self
            .counts
            .drain()
            .map(|(k, count)| FlowRecord {
                time: now,
                node: self.node.to_string(),
                window_start,
                verdict: k.verdict,
                reason: k.reason,
                source: k.source,
                destination: k.destination,
                decided_by: k.decided_by,
                count,
            })
            .collect();
        let flows = std::mem::take(&mut self.unitemized);
        let unitemized = (flows > 0 || dropped > 0).then(|| Unitemized {
            time: now,
            node: self.node.to_string(),
            window_start,
            unitemized: UnitemizedCounts { flows, dropped },
        });
        Closed {
            records,
            unitemized,
        }
    }

    /// Keys held in the open window.
    #[cfg(test)]
    pub fn keys(&self) -> usize {
        self.counts.len()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;
    use std::net::SocketAddr;

    use chokepoint_config::model::{Protocol, Selector};

    use super::*;
    use crate::policy::{Flow, Snapshot};

    /// Two namespaces: `shop` (web-1, web-2) and `data` (db-0, a StatefulSet pod with its
    /// per-pod labels), a Service `data/db`, and a policy accepting `shop`'s egress.
    pub const WORLD: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {team: a}}
---
apiVersion: v1
kind: Namespace
metadata: {name: data}
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: shop, labels: {app: web, pod-template-hash: 5d8f}}
spec: {nodeName: n1}
status: {podIPs: [{ip: 10.244.1.10}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web-2, namespace: shop, labels: {app: web, pod-template-hash: 5d8f}}
spec: {nodeName: n1}
status: {podIPs: [{ip: 10.244.1.11}]}
---
apiVersion: v1
kind: Pod
metadata:
  name: db-0
  namespace: data
  labels: {app: db, controller-revision-hash: db-7c9, statefulset.kubernetes.io/pod-name: db-0}
spec: {nodeName: n2}
status: {podIPs: [{ip: 10.244.2.20}]}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: data}
spec:
  clusterIP: 10.96.0.20
  ports: [{name: pg, port: 5432, targetPort: 15432}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: db-1, namespace: data, labels: {kubernetes.io/service-name: db}}
addressType: IPv4
endpoints: [{addresses: [10.244.2.20]}]
ports: [{name: pg, port: 15432}]
---
apiVersion: policy.chokepoint.dev/v1alpha1
kind: DeveloperNetworkPolicy
metadata: {name: out, namespace: shop}
spec:
  subject: {podSelector: {}}
  egress:
  - name: anywhere
    action: Accept
    to: [{networks: ["0.0.0.0/0"]}]
"#;

    pub fn snapshot() -> Arc<Snapshot> {
        let loaded = chokepoint_config::load_str(
            std::path::Path::new("world.yaml"),
            WORLD,
            chokepoint_config::UnknownFields::Reject,
        );
        assert!(!loaded.diagnostics.has_errors(), "{}", loaded.diagnostics);
        Arc::new(Snapshot::compile(&loaded.world, Default::default()))
    }

    pub fn event(
        snapshot: &Arc<Snapshot>,
        src: &str,
        dst: &str,
        addressed: Option<&str>,
        names: &[&str],
    ) -> FlowEvent {
        let dst: SocketAddr = dst.parse().unwrap();
        let addressed = addressed.map(|a| a.parse().unwrap());
        let flow = Flow::to(src.parse().unwrap(), dst, Protocol::Tcp, names).addressed(addressed);
        FlowEvent {
            snapshot: snapshot.clone(),
            verdict: snapshot.evaluate(&flow),
            src: flow.src,
            dst,
            protocol: Protocol::Tcp,
            addressed,
            names: names.iter().map(|n| Arc::from(*n)).collect(),
        }
    }

    fn aggregator(filter: NamespaceFilter, max_keys: usize) -> Aggregator {
        Aggregator::new(
            "n1".into(),
            filter,
            None,
            max_keys,
            Timestamp::from_unix_millis(1_000),
        )
    }

    #[test]
    fn flows_of_one_key_become_one_record_with_their_count() {
        let s = snapshot();
        let mut a = aggregator(NamespaceFilter::All, 100);
        for _ in 0..3 {
            assert_eq!(
                a.observe(&event(
                    &s,
                    "10.244.1.10",
                    "10.244.2.20:15432",
                    Some("10.96.0.20:5432"),
                    &[]
                )),
                Observed::Itemized
            );
        }
        a.observe(&event(
            &s,
            "10.244.1.11",
            "10.244.2.20:15432",
            Some("10.96.0.20:5432"),
            &[],
        ));
        // Two addresses of one name: one record for the name.
        a.observe(&event(
            &s,
            "10.244.1.10",
            "192.0.2.1:443",
            None,
            &["api.example.com"],
        ));
        a.observe(&event(
            &s,
            "10.244.1.10",
            "192.0.2.2:443",
            None,
            &["api.example.com"],
        ));
        a.observe(&event(&s, "10.244.1.10", "192.0.2.9:22", None, &[]));
        assert_eq!(a.keys(), 4);
        let closed = a.close(Timestamp::from_unix_millis(61_000), 0);
        assert!(closed.unitemized.is_none());
        let mut records = closed.records;
        records.sort_by_key(|r| (r.source.pod.clone(), r.destination.port));
        let counts: Vec<(Option<&str>, u16, u64)> = records
            .iter()
            .map(|r| (r.source.pod.as_deref(), r.destination.port, r.count))
            .collect();
        assert_eq!(
            counts,
            [
                (Some("web-1"), 22, 1),
                (Some("web-1"), 443, 2),
                (Some("web-1"), 15432, 3),
                (Some("web-2"), 15432, 1)
            ]
        );
        let db = &records[2];
        assert_eq!(db.destination.pod.as_deref(), Some("db-0"));
        assert_eq!(db.destination.ip, Some("10.244.2.20".parse().unwrap()));
        assert_eq!(
            db.destination.labels,
            Some(BTreeMap::from([("app".to_owned(), "db".to_owned())])),
            "per-pod labels are left out"
        );
        assert_eq!(
            db.destination
                .service
                .as_ref()
                .map(|s| (&*s.namespace, &*s.name, s.port)),
            Some(("data", "db", 5432))
        );
        assert_eq!(db.decided_by.policy.as_deref(), Some("out"));
        assert_eq!(db.window_start, Timestamp::from_unix_millis(1_000));
        assert_eq!(db.time, Timestamp::from_unix_millis(61_000));
        let named = &records[1];
        assert_eq!(named.destination.ip, None);
        assert_eq!(named.destination.names, ["api.example.com"]);
        assert_eq!(
            records[0].destination.ip,
            Some("192.0.2.9".parse().unwrap())
        );
        // The next window starts empty where this one ended.
        assert_eq!(a.keys(), 0);
        a.observe(&event(&s, "10.244.1.10", "192.0.2.9:22", None, &[]));
        let next = a.close(Timestamp::from_unix_millis(121_000), 0);
        assert_eq!(
            next.records[0].window_start,
            Timestamp::from_unix_millis(61_000)
        );
    }

    #[test]
    fn destinations_known_by_other_names_are_other_keys() {
        let s = snapshot();
        let mut a = aggregator(NamespaceFilter::All, 100);
        for i in 0..10 {
            let name = format!("svc-{i}.example.com");
            a.observe(&event(
                &s,
                "10.244.1.10",
                "192.0.2.1:443",
                None,
                &[name.as_str()],
            ));
        }
        assert_eq!(a.keys(), 10);
    }

    #[test]
    fn flows_beyond_the_key_bound_are_counted_not_lost() {
        let s = snapshot();
        let mut a = aggregator(NamespaceFilter::All, 2);
        let mut total = 0;
        for port in [1, 2, 3, 4, 1, 2, 3] {
            let dst = format!("192.0.2.9:{port}");
            a.observe(&event(&s, "10.244.1.10", &dst, None, &[]));
            total += 1;
        }
        assert_eq!(a.keys(), 2);
        let closed = a.close(Timestamp::from_unix_millis(2_000), 5);
        let itemized: u64 = closed.records.iter().map(|r| r.count).sum();
        let u = closed.unitemized.expect("an unitemized line");
        assert_eq!(
            (itemized, u.unitemized.flows, u.unitemized.dropped),
            (4, 3, 5)
        );
        assert_eq!(itemized + u.unitemized.flows, total);
        // Nothing over the bound and nothing dropped: no unitemized line.
        assert!(
            a.close(Timestamp::from_unix_millis(3_000), 0)
                .unitemized
                .is_none()
        );
    }

    #[test]
    fn only_covered_namespaces_are_logged() {
        let s = snapshot();
        let by_label = Selector::equals("team", "a");
        let others = Selector::equals("team", "b");
        for (filter, want) in [
            (
                NamespaceFilter::Names(vec!["shop".into()]),
                Observed::Itemized,
            ),
            (
                NamespaceFilter::Names(vec!["data".into()]),
                Observed::NotCovered,
            ),
            (NamespaceFilter::Selector(by_label), Observed::Itemized),
            (NamespaceFilter::Selector(others), Observed::NotCovered),
        ] {
            let mut a = aggregator(filter.clone(), 10);
            assert_eq!(
                a.observe(&event(&s, "10.244.1.10", "192.0.2.9:22", None, &[])),
                want,
                "{filter:?}"
            );
        }
        // A source that is no pod is covered only when every namespace is.
        let mut a = aggregator(NamespaceFilter::Names(vec!["shop".into()]), 10);
        assert_eq!(
            a.observe(&event(&s, "10.9.9.9", "192.0.2.9:22", None, &[])),
            Observed::NotCovered
        );
    }
}
