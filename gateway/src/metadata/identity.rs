//! Who is asking: the pod that owns the source IP in the snapshot, and the identity headers
//! the gateway sends upstream for it.

use std::net::IpAddr;

use chokepoint_config::inventory::{NamespaceInfo, PodInfo};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};

use super::roles::Role;
use crate::policy::Snapshot;

/// Every request header with this prefix is the gateway's to set: a pod's own are removed.
pub const HEADER_PREFIX: &str = "x-chokepoint-";
pub const NAMESPACE_HEADER: &str = "x-chokepoint-pod-namespace";
pub const POD_HEADER: &str = "x-chokepoint-pod-name";
pub const UID_HEADER: &str = "x-chokepoint-pod-uid";
pub const IP_HEADER: &str = "x-chokepoint-pod-ip";
pub const SERVICE_ACCOUNT_HEADER: &str = "x-chokepoint-service-account";
pub const ROLE_HEADER: &str = "x-chokepoint-role";

/// The source of a request.
#[derive(Debug, Clone, Copy)]
pub enum Who<'a> {
    Pod {
        pod: &'a PodInfo,
        namespace: &'a NamespaceInfo,
    },
    /// No pod in the snapshot owns the IP.
    Unknown,
    /// More than one pod claims the IP (IP reuse while the inventory still lists the old
    /// pod): nobody's credentials may be handed out for it.
    Shared,
}

impl<'a> Who<'a> {
    pub fn of(snapshot: &'a Snapshot, ip: IpAddr) -> Who<'a> {
        if snapshot.pod_ip_is_shared(ip) {
            return Who::Shared;
        }
        match snapshot.pod_by_ip(ip) {
            Some(p) => Who::Pod {
                pod: snapshot.pod(p),
                namespace: snapshot.pod_namespace(p),
            },
            None => Who::Unknown,
        }
    }

    pub fn namespace(&self) -> Option<&'a str> {
        match self {
            Who::Pod { pod, .. } => Some(&pod.namespace),
            _ => None,
        }
    }

    /// What identifies this source across snapshots: the pod (UID when the inventory has
    /// one, else namespace and name), `None` when it is no single pod.
    pub fn key(&self) -> Option<PodKey> {
        match self {
            Who::Pod { pod, .. } => Some(match &pod.uid {
                Some(uid) => PodKey::Uid(uid.clone()),
                None => PodKey::Name(pod.namespace.clone(), pod.name.clone()),
            }),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodKey {
    Uid(String),
    Name(String, String),
}

/// Whether a header name is, or normalises to, one of the gateway's: [`HEADER_PREFIX`] with
/// `_` read as `-`. CGI-style servers and proxies (nginx with `underscores_in_headers`,
/// WSGI, Rack) map both to one name, so `X_Chokepoint_Role` would reach such an endpoint as
/// the role header. `name` is lower case (hyper's header names are).
pub fn is_identity_header(name: &str) -> bool {
    let name = name.as_bytes();
    name.len() >= HEADER_PREFIX.len()
        && name
            .iter()
            .zip(HEADER_PREFIX.as_bytes())
            .all(|(&got, &want)| got == want || (got == b'_' && want == b'-'))
}

/// Removes every identity header the pod sent itself, with `-` or `_` in its name.
pub fn strip_identity(headers: &mut HeaderMap) {
    let ours: Vec<HeaderName> = headers
        .keys()
        .filter(|k| is_identity_header(k.as_str()))
        .cloned()
        .collect();
    for k in ours {
        headers.remove(&k);
    }
}

/// Sets the identity headers for `who` (after [`strip_identity`]): namespace, pod, UID,
/// service account and source IP when known, and the role when the namespace allows it.
pub fn add_identity(headers: &mut HeaderMap, who: &Who<'_>, source: IpAddr, role: &Role<'_>) {
    let mut set = |name: &'static str, value: &str| {
        // Values come from the inventory; one that is no valid header value is left out
        // rather than sent mangled.
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(HeaderName::from_static(name), v);
        }
    };
    set(IP_HEADER, &source.to_string());
    if let Who::Pod { pod, .. } = who {
        set(NAMESPACE_HEADER, &pod.namespace);
        set(POD_HEADER, &pod.name);
        if let Some(uid) = &pod.uid {
            set(UID_HEADER, uid);
        }
        if let Some(sa) = &pod.service_account {
            set(SERVICE_ACCOUNT_HEADER, sa);
        }
        if let Role::Allowed(role) = role {
            set(ROLE_HEADER, role);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use chokepoint_config::{UnknownFields, load_str};

    use super::*;
    use crate::policy::{Options, Snapshot};

    fn snapshot() -> Snapshot {
        let text = r#"apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Namespace, metadata: {name: aws}}
- apiVersion: v1
  kind: Pod
  metadata: {name: app, namespace: aws, uid: u-1}
  spec: {serviceAccountName: app-sa, containers: [{name: c, image: x}]}
  status: {podIP: 10.244.1.10}
- apiVersion: v1
  kind: Pod
  metadata: {name: old, namespace: aws, uid: u-2}
  status: {podIP: 10.244.1.20}
- apiVersion: v1
  kind: Pod
  metadata: {name: new, namespace: aws, uid: u-3}
  status: {podIP: 10.244.1.20}
"#;
        let loaded = load_str(Path::new("inv.yaml"), text, UnknownFields::Reject);
        assert!(!loaded.diagnostics.has_errors(), "{}", loaded.diagnostics);
        Snapshot::compile(&loaded.world, Options::default())
    }

    #[test]
    fn sources_are_a_pod_nobody_or_ambiguous() {
        let s = snapshot();
        let app = Who::of(&s, "10.244.1.10".parse().unwrap());
        assert_eq!(app.namespace(), Some("aws"));
        assert_eq!(app.key(), Some(PodKey::Uid("u-1".into())));
        assert!(matches!(
            Who::of(&s, "10.244.1.99".parse().unwrap()),
            Who::Unknown
        ));
        assert!(
            matches!(Who::of(&s, "10.244.1.20".parse().unwrap()), Who::Shared),
            "two pods claim the IP: neither is trusted"
        );
    }

    #[test]
    fn identity_headers_spelt_with_underscores_are_stripped_too() {
        let mut h = HeaderMap::new();
        for name in [
            "x_chokepoint_role",
            "x-chokepoint_pod-namespace",
            "x_chokepoint-pod_ip",
            "x_chokepoint_",
        ] {
            h.insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static("forged"),
            );
        }
        h.insert("x_chokepoint", HeaderValue::from_static("not ours"));
        h.insert("x-chokepointy", HeaderValue::from_static("not ours"));
        strip_identity(&mut h);
        let left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(left.len(), 2, "{left:?}");
        assert!(h.contains_key("x_chokepoint") && h.contains_key("x-chokepointy"));
    }

    #[test]
    fn pod_sent_identity_headers_are_replaced_by_the_gateways() {
        let s = snapshot();
        let ip: IpAddr = "10.244.1.10".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            "x-chokepoint-pod-namespace",
            HeaderValue::from_static("kube-system"),
        );
        h.insert("X-Chokepoint-Role", HeaderValue::from_static("admin"));
        h.insert("x-chokepoint-anything", HeaderValue::from_static("x"));
        h.insert("x-aws-ec2-metadata-token", HeaderValue::from_static("t"));
        strip_identity(&mut h);
        add_identity(&mut h, &Who::of(&s, ip), ip, &Role::Allowed("app-reader"));
        assert_eq!(h[NAMESPACE_HEADER], "aws");
        assert_eq!(h[POD_HEADER], "app");
        assert_eq!(h[UID_HEADER], "u-1");
        assert_eq!(h[SERVICE_ACCOUNT_HEADER], "app-sa");
        assert_eq!(h[IP_HEADER], "10.244.1.10");
        assert_eq!(h[ROLE_HEADER], "app-reader");
        assert!(!h.contains_key("x-chokepoint-anything"));
        assert_eq!(h["x-aws-ec2-metadata-token"], "t", "other headers stay");

        let mut h = HeaderMap::new();
        h.insert("x-chokepoint-role", HeaderValue::from_static("admin"));
        strip_identity(&mut h);
        add_identity(&mut h, &Who::Unknown, ip, &Role::Unannotated);
        assert!(!h.contains_key(ROLE_HEADER));
        assert_eq!(h.len(), 1, "only the source IP is known: {h:?}");
    }
}
