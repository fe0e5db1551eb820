//! The inventory: namespaces, pods and nodes as `kubectl get ns,pods,nodes -A -o yaml` prints
//! them (inventory.rs and the loader's handling of inventory kinds).

use std::net::IpAddr;

use crate::common::*;
use chokepoint_config::inventory::{
    AddressType, ContainerPort, NAMESPACE_NAME_LABEL, NamespaceInfo, PodInfo, TargetPort,
};
use chokepoint_config::model::{Labels, Protocol};
use chokepoint_config::{Loaded, UnknownFields, load_paths};

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn dump_file() -> Loaded {
    load_paths(&[fixtures().join("inventory.yaml")], UnknownFields::Reject)
}

fn pod<'a>(l: &'a Loaded, namespace: &str, name: &str) -> &'a PodInfo {
    l.world
        .inventory
        .pods
        .iter()
        .find(|p| p.namespace == namespace && p.name == name)
        .unwrap_or_else(|| panic!("no pod {namespace}/{name} in {:#?}", l.world.inventory.pods))
}

#[test]
fn a_kubectl_list_dump_loads_and_other_kinds_are_ignored_with_a_warning() {
    let l = dump_file();
    assert_errors(&l, &[]);
    assert_warnings(
        &l,
        &[(
            164,
            3,
            "kind `ConfigMap` (v1) is not read by Chokepoint; ignored",
        )],
    );
    let w = warnings(&l);
    assert_eq!(w[0].object.as_deref(), Some("ConfigMap/kube-root-ca.crt"));
    assert_eq!(l.world.inventory.services[0].name, "kube-dns");
    assert!(w[0].file.ends_with("tests/fixtures/inventory.yaml"));
    assert!(l.world.cluster_policies.is_empty() && l.world.network_policies.is_empty());
}

#[test]
fn namespaces_keep_their_labels_and_carry_the_name_label() {
    let l = dump_file();
    let ns = &l.world.inventory.namespaces;
    let names: Vec<&str> = ns.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["kube-system", "payments", "jobs"]);
    assert_eq!(
        ns[0].labels,
        labels(&[(NAMESPACE_NAME_LABEL, "kube-system")])
    );
    // The dump of `payments` lacks the automatic label (an old API server); it is added.
    assert_eq!(
        ns[1].labels,
        labels(&[
            ("team", "payments"),
            ("env", "prod"),
            (NAMESPACE_NAME_LABEL, "payments")
        ])
    );
}

#[test]
fn a_pod_whose_namespace_is_missing_gets_an_implicit_namespace() {
    let l = dump_file();
    assert_eq!(
        l.world.inventory.namespaces[2],
        NamespaceInfo::new("jobs", Labels::new())
    );
    assert_eq!(
        l.world.inventory.namespaces[2].labels,
        labels(&[(NAMESPACE_NAME_LABEL, "jobs")])
    );
    // Only once, however many pods it has, and never for a namespace that exists.
    let l = load(
        "apiVersion: v1\nkind: List\nitems:
- {apiVersion: v1, kind: Pod, metadata: {name: a, namespace: ns-x}}
- {apiVersion: v1, kind: Pod, metadata: {name: b, namespace: ns-x}}
- {apiVersion: v1, kind: Pod, metadata: {name: c, namespace: ns-y}}
- {apiVersion: v1, kind: Pod, metadata: {name: d}}
- {apiVersion: v1, kind: Namespace, metadata: {name: ns-y, labels: {own: label}}}
",
    );
    assert_clean(&l);
    let ns = &l.world.inventory.namespaces;
    assert_eq!(
        ns,
        &vec![
            NamespaceInfo::new("ns-y", labels(&[("own", "label")])),
            NamespaceInfo::new("default", Labels::new()),
            NamespaceInfo::new("ns-x", Labels::new()),
        ]
    );
    assert_eq!(pod(&l, "default", "d").namespace, "default");
}

#[test]
fn pods_have_every_ip_their_node_and_named_ports() {
    let l = dump_file();
    let dns = pod(&l, "kube-system", "coredns-7db6d8ff4d-x2x9q");
    assert_eq!(
        dns.ips,
        ips(&["10.244.0.3", "fd00:10:244::3"]),
        "dual-stack, podIP not repeated"
    );
    assert_eq!(
        dns.uid.as_deref(),
        Some("5d0c2a55-7a3c-4f5e-8c11-000000000001")
    );
    assert_eq!(
        dns.labels,
        labels(&[("k8s-app", "kube-dns"), ("pod-template-hash", "7db6d8ff4d")])
    );
    assert_eq!(dns.node_name.as_deref(), Some("node-a"));
    assert!(!dns.host_network);
    assert_eq!(
        dns.ports,
        vec![
            ContainerPort {
                name: Some("dns".into()),
                port: 53,
                protocol: Protocol::Udp
            },
            ContainerPort {
                name: Some("dns-tcp".into()),
                port: 53,
                protocol: Protocol::Tcp
            },
            ContainerPort {
                name: Some("metrics".into()),
                port: 9153,
                protocol: Protocol::Tcp
            },
        ]
    );
    assert_eq!(
        dns.named_port("dns").map(|p| (p.port, p.protocol)),
        Some((53, Protocol::Udp))
    );
    assert_eq!(dns.named_port("metrics").map(|p| p.port), Some(9153));
    assert!(dns.named_port("web").is_none());

    let checkout = pod(&l, "payments", "checkout-6f9c7b7d9-abcde");
    assert_eq!(checkout.ips, ips(&["10.244.0.7"]));
    assert_eq!(
        checkout.ports,
        vec![ContainerPort {
            name: Some("web".into()),
            port: 8080,
            protocol: Protocol::Tcp
        }],
        "protocol defaults to TCP; a container without ports adds none"
    );

    let pending = pod(&l, "jobs", "batch-1");
    assert!(pending.ips.is_empty());
}

#[test]
fn host_network_pods_are_marked() {
    let l = dump_file();
    let proxy = pod(&l, "kube-system", "kube-proxy-9zq7k");
    assert!(proxy.host_network);
    assert_eq!(proxy.ips, ips(&["192.168.49.2"]));
}

#[test]
fn finished_pods_are_dropped() {
    let l = dump_file();
    let names: Vec<&str> = l
        .world
        .inventory
        .pods
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "coredns-7db6d8ff4d-x2x9q",
            "checkout-6f9c7b7d9-abcde",
            "kube-proxy-9zq7k",
            "batch-1"
        ]
    );

    let l = load(
        "apiVersion: v1\nkind: PodList\nitems:
- {apiVersion: v1, kind: Pod, metadata: {name: done, namespace: a}, status: {phase: Succeeded, podIP: 10.0.0.1}}
- {apiVersion: v1, kind: Pod, metadata: {name: oom, namespace: a}, status: {phase: Failed, podIP: 10.0.0.2}}
- {apiVersion: v1, kind: Pod, metadata: {name: up, namespace: a}, status: {phase: Running, podIP: 10.0.0.1}}
",
    );
    assert_clean(&l);
    let pods = &l.world.inventory.pods;
    assert_eq!(pods.len(), 1, "{pods:#?}");
    assert_eq!(
        (pods[0].name.as_str(), pods[0].ips.clone()),
        ("up", ips(&["10.0.0.1"]))
    );
}

#[test]
fn nodes_have_every_ip_address_and_their_labels() {
    let l = dump_file();
    let nodes = &l.world.inventory.nodes;
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].name, "node-a");
    assert_eq!(
        nodes[0].addresses,
        ips(&["192.168.49.2", "fd00:c0a8::2"]),
        "the Hostname address is not an IP"
    );
    assert_eq!(
        nodes[0].labels.get("kubernetes.io/os").map(String::as_str),
        Some("linux")
    );
    assert_eq!(
        nodes[0]
            .labels
            .get("node-role.kubernetes.io/control-plane")
            .map(String::as_str),
        Some("")
    );
}

#[test]
fn inventory_objects_need_a_name() {
    let l = load(
        "apiVersion: v1\nkind: List\nitems:
- {apiVersion: v1, kind: Namespace, metadata: {labels: {a: b}}}
- {apiVersion: v1, kind: Pod, metadata: {namespace: a}, status: {phase: Running, podIP: 10.0.0.1}}
- {apiVersion: v1, kind: Node, metadata: {}}
",
    );
    assert_errors(
        &l,
        &[
            (4, 3, "`metadata.name` is required"),
            (5, 3, "`metadata.name` is required"),
            (6, 3, "`metadata.name` is required"),
        ],
    );
    assert_eq!(l.world.inventory, Default::default());
}

#[test]
fn malformed_inventory_objects_are_located_errors() {
    let l = load(
        "apiVersion: v1
kind: Pod
metadata:
  name: p
spec:
  containers: many
",
    );
    assert_one_error(&l, 1, 1, &["not a valid Pod"]);
    assert!(l.world.inventory.pods.is_empty());

    let l = load("apiVersion: v2\nkind: Node\nmetadata: {name: n}\n");
    assert_one_error(&l, 1, 1, &["`Node` is read as apiVersion `v1`, not `v2`"]);
}

#[test]
fn inventory_and_policies_load_together() {
    let text = format!(
        "{}---\n{}",
        cnp(
            "- action: Accept\n  to:\n  - pods: {podSelector: {matchLabels: {k8s-app: kube-dns}}}\n  protocols:\n  - destinationNamedPort: dns\n"
        ),
        std::fs::read_to_string(fixtures().join("inventory.yaml")).unwrap()
    );
    let l = load(&text);
    assert_errors(&l, &[]);
    assert_eq!(warnings(&l).len(), 1);
    assert_eq!(l.world.cluster_policies.len(), 1);
    assert_eq!(l.world.inventory.pods.len(), 4);
    // Positions in the second document are counted from the top of the file.
    let first = warnings(&l)[0];
    assert_eq!((first.line, first.column), (164 + 16, 3), "{}", dump(&l));
}

#[test]
fn pods_keep_their_service_account_and_only_the_annotations_the_gateway_reads() {
    let l = load(
        r#"apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Namespace
  metadata:
    name: aws
    annotations:
      iam.amazonaws.com/allowed-roles: '["app-*"]'
      kubectl.kubernetes.io/last-applied-configuration: '{"big": "blob"}'
- apiVersion: v1
  kind: Pod
  metadata:
    name: app
    namespace: aws
    annotations:
      iam.amazonaws.com/role: app-reader
      chokepoint.dev/note: kept
      prometheus.io/scrape: "true"
  spec:
    serviceAccountName: app-sa
    containers: [{name: main, image: x}]
- apiVersion: v1
  kind: Pod
  metadata: {name: legacy, namespace: aws}
  spec:
    serviceAccount: old-style
    containers: [{name: main, image: x}]
- apiVersion: v1
  kind: Pod
  metadata: {name: bare, namespace: aws}
"#,
    );
    assert_clean(&l);
    let ns = &l.world.inventory.namespaces[0];
    assert_eq!(
        ns.annotations,
        labels(&[("iam.amazonaws.com/allowed-roles", r#"["app-*"]"#)])
    );
    let app = pod(&l, "aws", "app");
    assert_eq!(app.service_account.as_deref(), Some("app-sa"));
    assert_eq!(
        app.annotations,
        labels(&[
            ("chokepoint.dev/note", "kept"),
            ("iam.amazonaws.com/role", "app-reader")
        ])
    );
    assert_eq!(
        pod(&l, "aws", "legacy").service_account.as_deref(),
        Some("old-style"),
        "the deprecated spec.serviceAccount is read when serviceAccountName is absent"
    );
    let bare = pod(&l, "aws", "bare");
    assert_eq!(bare.service_account, None);
    assert!(bare.annotations.is_empty());
}

/// `kubectl get svc,endpointslices -A -o yaml`, abridged.
const SERVICES_DUMP: &str = r#"apiVersion: v1
items:
- apiVersion: v1
  kind: Service
  metadata:
    name: kubernetes
    namespace: default
  spec:
    clusterIP: 10.96.0.1
    clusterIPs: [10.96.0.1]
    ports:
    - name: https
      port: 443
      protocol: TCP
      targetPort: 6443
    type: ClusterIP
- apiVersion: v1
  kind: Service
  metadata:
    name: db
    namespace: payments
  spec:
    clusterIP: None
    ports:
    - name: pg
      port: 5432
      targetPort: postgres
    selector:
      app: db
- apiVersion: discovery.k8s.io/v1
  kind: EndpointSlice
  metadata:
    name: kubernetes
    namespace: default
    labels:
      kubernetes.io/service-name: kubernetes
  addressType: IPv4
  endpoints:
  - addresses: [192.168.49.2]
    conditions: {ready: true, serving: true, terminating: false}
  ports:
  - name: https
    port: 6443
    protocol: TCP
- apiVersion: discovery.k8s.io/v1
  kind: EndpointSlice
  metadata:
    name: db-x7k2p
    namespace: payments
    labels:
      kubernetes.io/service-name: db
  addressType: IPv4
  endpoints:
  - addresses: [10.244.1.21]
    conditions: {ready: false, serving: false, terminating: true}
    targetRef: {kind: Pod, name: db-0, namespace: payments}
  ports:
  - name: pg
    port: 15432
kind: List
metadata:
  resourceVersion: ""
"#;

#[test]
fn services_and_endpoint_slices_load_from_a_kubectl_dump() {
    let l = load(SERVICES_DUMP);
    assert_errors(&l, &[]);
    assert!(warnings(&l).is_empty(), "{}", dump(&l));
    let inv = &l.world.inventory;
    let api = &inv.services[0];
    assert_eq!(
        (api.namespace.as_str(), api.name.as_str()),
        ("default", "kubernetes")
    );
    assert_eq!(api.cluster_ips, ips(&["10.96.0.1"]));
    assert_eq!(api.ports[0].target_port, TargetPort::Number(6443));
    assert_eq!(api.selector, None);
    let db = &inv.services[1];
    assert!(db.is_headless());
    assert_eq!(db.ports[0].target_port, TargetPort::Name("postgres".into()));
    assert_eq!(db.selector, Some(labels(&[("app", "db")])));
    let slice = &inv.endpoint_slices[1];
    assert_eq!(slice.service, "db");
    assert_eq!(slice.address_type, AddressType::Ipv4);
    let e = &slice.endpoints[0];
    assert!(!e.is_ready());
    assert_eq!(e.terminating, Some(true));
    assert_eq!(e.pod.as_ref().map(|p| p.name.as_str()), Some("db-0"));
    assert_eq!(slice.ports[0].port, Some(15432));
    assert!(slice.ports[0].serves(Some("pg")));
}

#[test]
fn invalid_services_and_endpoint_slices_are_reported_at_their_fields() {
    let text = r#"apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIPs: [10.96.0.7, not-an-ip]
  ports:
  - {name: http, port: 0}
  - {name: dns, port: 53, protocol: ICMP}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: shop}
addressType: IPv4
endpoints:
- addresses: ["fd00::1"]
ports:
- {name: http, port: 70000}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-2, namespace: shop}
addressType: IPv4
endpoints: "no list"
"#;
    let l = load(text);
    assert_errors(
        &l,
        &[
            (
                5,
                27,
                "`not-an-ip` is not an IP address (use `None` for a headless Service)",
            ),
            (7, 18, "port 0 is out of range; use 1 to 65535"),
            (8, 27, "unknown protocol `ICMP`; use TCP, UDP or SCTP"),
            (12, 1, "the label `kubernetes.io/service-name` is missing"),
            (
                15,
                15,
                "`fd00::1` is not an IPv4 address, as the slice's addressType says",
            ),
            (17, 16, "port 70000 is out of range"),
            (23, 1, "not a valid EndpointSlice: invalid type"),
        ],
    );
    let e = errors(&l);
    assert_eq!(e[0].object.as_deref(), Some("Service/shop/web"));
    assert_eq!(e[3].object.as_deref(), Some("EndpointSlice/shop/web-1"));
    assert!(l.world.inventory.services.is_empty());
    assert!(l.world.inventory.endpoint_slices.is_empty());
}
