//! One request's verdict, as a value: forward it, or answer it with a status and a one-line
//! reason (and say whether that refusal is audited).

use chokepoint_config::settings::MetadataMode;
use hyper::StatusCode;
use hyper::header::{self, HeaderMap};
use hyper::http::request::Parts;

use super::config::MetadataConfig;
use super::identity::Who;
use super::metrics::RequestResult;
use super::paths::{self, credentials_request};
use super::roles::{self, Role};
use crate::audit::AuditReason;

/// What to do with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestVerdict<'a> {
    /// Send it upstream; `role` is the pod's (for the identity headers).
    Forward {
        role: Role<'a>,
    },
    Refuse(Refusal),
}

/// An answer the gateway gives itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    /// One line, without the newline.
    pub message: String,
    pub result: RequestResult,
    /// Refusals of well-formed requests are audited; malformed ones are counted only.
    pub audit: Option<AuditReason>,
    /// Close the connection after answering (the request's framing cannot be trusted, or
    /// its body was not read).
    pub close: bool,
}

fn bad(status: StatusCode, message: impl Into<String>) -> RequestVerdict<'static> {
    RequestVerdict::Refuse(Refusal {
        status,
        message: message.into(),
        result: RequestResult::BadRequest,
        audit: None,
        close: true,
    })
}

fn forbidden(
    message: impl Into<String>,
    result: RequestResult,
    reason: AuditReason,
) -> RequestVerdict<'static> {
    RequestVerdict::Refuse(Refusal {
        status: StatusCode::FORBIDDEN,
        message: message.into(),
        result,
        audit: Some(reason),
        close: false,
    })
}

/// Decides a request from `who` (hyper has parsed its head; it has no body unless the
/// request says so, and then it is refused).
pub fn decide<'a>(config: &MetadataConfig, who: &Who<'a>, req: &Parts) -> RequestVerdict<'a> {
    if let Some(refusal) = framing(&req.headers) {
        return refusal;
    }
    let segments = match paths::segments(&req.uri) {
        Ok(s) => s,
        Err(why) => return bad(StatusCode::BAD_REQUEST, why.message()),
    };
    if config.mode == MetadataMode::Deny {
        return forbidden(
            "access to the metadata server is disabled on this node (metadata.mode: deny)",
            RequestResult::Disabled,
            AuditReason::METADATA_DISABLED,
        );
    }
    if !config.paths.allows(who.namespace(), &req.method, &segments) {
        return forbidden(
            format!(
                "{} {} is not an allowed metadata path (metadata.allowPaths)",
                req.method,
                req.uri.path()
            ),
            RequestResult::PathDenied,
            AuditReason::METADATA_PATH_DENIED,
        );
    }
    // The real metadata service answers with the node's role whatever the pod's annotation:
    // roles are a `rewrite` matter.
    if config.mode != MetadataMode::Rewrite {
        return RequestVerdict::Forward {
            role: Role::Unannotated,
        };
    }
    let role = match who {
        Who::Pod { pod, namespace } => roles::role(pod, namespace, &config.roles),
        _ => Role::Unannotated,
    };
    let Some(requested) = credentials_request(&segments) else {
        return RequestVerdict::Forward { role };
    };
    let denied = |message: String| {
        forbidden(
            message,
            RequestResult::RoleDenied,
            AuditReason::METADATA_ROLE_DENIED,
        )
    };
    match (who, &role) {
        (Who::Unknown, _) => denied("no pod of the inventory owns this source IP".into()),
        (Who::Shared, _) => denied(
            "more than one pod of the inventory claims this source IP; no credentials until one does"
                .into(),
        ),
        (Who::Pod { namespace, .. }, Role::NotAllowed(r)) => denied(format!(
            "role {r} is not allowed in namespace {} ({} annotation)",
            namespace.name,
            roles::ALLOWED_ROLES_ANNOTATION
        )),
        (_, Role::Allowed(r)) if requested.is_some_and(|q| q != roles::role_name(r)) => {
            denied(format!(
                "this pod's role is {}, not {}",
                roles::role_name(r),
                requested.unwrap_or_default()
            ))
        }
        _ => RequestVerdict::Forward { role },
    }
}

/// Request framing the metadata API never needs: bodies, and anything that could make the
/// gateway and the upstream disagree about where a request ends.
fn framing(headers: &HeaderMap) -> Option<RequestVerdict<'static>> {
    // hyper drops `Content-Length` when `Transfer-Encoding` is present, so a request carrying
    // both (the classic smuggling shape) arrives here with `Transfer-Encoding` alone.
    if headers.contains_key(header::TRANSFER_ENCODING) {
        return Some(bad(
            StatusCode::BAD_REQUEST,
            "Transfer-Encoding is not accepted: metadata requests have no body",
        ));
    }
    if headers.get_all(header::HOST).iter().count() > 1 {
        return Some(bad(StatusCode::BAD_REQUEST, "more than one Host header"));
    }
    // hyper has already refused unparsable or differing lengths.
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    if length > 0 {
        return Some(bad(
            StatusCode::PAYLOAD_TOO_LARGE,
            "metadata requests have no body",
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use chokepoint_config::inventory::{NamespaceInfo, PodInfo};
    use chokepoint_config::model::Labels;
    use chokepoint_config::settings::{MetadataSettings, PathPattern};
    use hyper::{Method, Request};

    use super::*;

    fn config(mode: MetadataMode) -> MetadataConfig {
        let mut s = MetadataSettings {
            mode,
            endpoint: Some("192.0.2.50:8181".parse().unwrap()),
            ..MetadataSettings::default()
        };
        s.namespace_paths.insert(
            "ci".into(),
            vec![PathPattern::parse("/latest/user-data").unwrap()],
        );
        MetadataConfig::new(&s)
    }

    fn req(method: Method, uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn pod(namespace: &str, role: Option<&str>) -> PodInfo {
        PodInfo {
            namespace: namespace.into(),
            name: "app".into(),
            uid: Some("u-1".into()),
            labels: Labels::new(),
            ips: vec!["10.244.1.10".parse().unwrap()],
            host_network: false,
            node_name: None,
            ports: Vec::new(),
            service_account: Some("app-sa".into()),
            annotations: role
                .map(|r| Labels::from([(roles::ROLE_ANNOTATION.to_owned(), r.to_owned())]))
                .unwrap_or_default(),
        }
    }

    fn namespace(name: &str) -> NamespaceInfo {
        NamespaceInfo {
            annotations: Labels::from([(
                roles::ALLOWED_ROLES_ANNOTATION.to_owned(),
                r#"["app-*"]"#.to_owned(),
            )]),
            ..NamespaceInfo::new(name, Labels::new())
        }
    }

    fn refusal(v: RequestVerdict<'_>) -> Refusal {
        match v {
            RequestVerdict::Refuse(r) => r,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    const CREDS: &str = "/latest/meta-data/iam/security-credentials/";

    #[test]
    fn allowed_credentials_requests_are_forwarded_with_the_role() {
        let c = config(MetadataMode::Rewrite);
        let (p, ns) = (pod("aws", Some("app-reader")), namespace("aws"));
        let who = Who::Pod {
            pod: &p,
            namespace: &ns,
        };
        for path in [
            CREDS,
            "/latest/meta-data/iam/security-credentials/app-reader",
        ] {
            assert_eq!(
                decide(&c, &who, &req(Method::GET, path, &[])),
                RequestVerdict::Forward {
                    role: Role::Allowed("app-reader")
                },
                "{path}"
            );
        }
        assert!(matches!(
            decide(
                &c,
                &who,
                &req(Method::PUT, "/latest/api/token", &[("content-length", "0")])
            ),
            RequestVerdict::Forward { .. }
        ));
    }

    #[test]
    fn sensitive_paths_are_denied_and_audited() {
        let c = config(MetadataMode::Rewrite);
        let (p, ns) = (pod("aws", None), namespace("aws"));
        let who = Who::Pod {
            pod: &p,
            namespace: &ns,
        };
        let r = refusal(decide(
            &c,
            &who,
            &req(Method::GET, "/latest/user-data", &[]),
        ));
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert_eq!(r.audit, Some(AuditReason::METADATA_PATH_DENIED));
        assert_eq!(
            r.message,
            "GET /latest/user-data is not an allowed metadata path (metadata.allowPaths)"
        );
        assert!(!r.close, "a well-formed request keeps the connection");
        // ...unless the namespace has it.
        let (p, ns) = (pod("ci", None), namespace("ci"));
        let ci = Who::Pod {
            pod: &p,
            namespace: &ns,
        };
        assert!(matches!(
            decide(&c, &ci, &req(Method::GET, "/latest/user-data", &[])),
            RequestVerdict::Forward { .. }
        ));
    }

    #[test]
    fn roles_outside_the_namespace_or_of_others_are_denied() {
        let c = config(MetadataMode::Rewrite);
        let ns = namespace("aws");
        let admin = pod("aws", Some("admin"));
        let r = refusal(decide(
            &c,
            &Who::Pod {
                pod: &admin,
                namespace: &ns,
            },
            &req(Method::GET, CREDS, &[]),
        ));
        assert_eq!(r.audit, Some(AuditReason::METADATA_ROLE_DENIED));
        assert!(
            r.message
                .contains("role admin is not allowed in namespace aws"),
            "{}",
            r.message
        );
        // Not a credentials path: forwarded, without the role.
        assert_eq!(
            decide(
                &c,
                &Who::Pod {
                    pod: &admin,
                    namespace: &ns
                },
                &req(Method::PUT, "/latest/api/token", &[])
            ),
            RequestVerdict::Forward {
                role: Role::NotAllowed("admin")
            }
        );
        let reader = pod("aws", Some("app-reader"));
        let r = refusal(decide(
            &c,
            &Who::Pod {
                pod: &reader,
                namespace: &ns,
            },
            &req(
                Method::GET,
                "/latest/meta-data/iam/security-credentials/app-writer",
                &[],
            ),
        ));
        assert_eq!(r.message, "this pod's role is app-reader, not app-writer");
        for who in [Who::Unknown, Who::Shared] {
            let r = refusal(decide(&c, &who, &req(Method::GET, CREDS, &[])));
            assert_eq!(r.result, RequestResult::RoleDenied);
        }
        // Unannotated: the endpoint's default role, if any.
        let plain = pod("aws", None);
        assert!(matches!(
            decide(
                &c,
                &Who::Pod {
                    pod: &plain,
                    namespace: &ns
                },
                &req(Method::GET, CREDS, &[])
            ),
            RequestVerdict::Forward {
                role: Role::Unannotated
            }
        ));
    }

    #[test]
    fn passthrough_filters_paths_but_not_roles_and_deny_refuses_everything() {
        let ns = namespace("aws");
        let admin = pod("aws", Some("admin"));
        let who = Who::Pod {
            pod: &admin,
            namespace: &ns,
        };
        let pass = config(MetadataMode::Passthrough);
        assert!(matches!(
            decide(&pass, &who, &req(Method::GET, CREDS, &[])),
            RequestVerdict::Forward { .. }
        ));
        assert_eq!(
            refusal(decide(
                &pass,
                &who,
                &req(Method::GET, "/latest/user-data", &[])
            ))
            .result,
            RequestResult::PathDenied
        );
        let r = refusal(decide(
            &config(MetadataMode::Deny),
            &who,
            &req(Method::GET, CREDS, &[]),
        ));
        assert_eq!(
            (r.status, r.audit),
            (StatusCode::FORBIDDEN, Some(AuditReason::METADATA_DISABLED))
        );
    }

    #[test]
    fn bodies_smuggling_shapes_and_odd_targets_are_bad_requests() {
        let c = config(MetadataMode::Rewrite);
        for (uri, headers, status) in [
            (
                CREDS,
                vec![("transfer-encoding", "chunked")],
                StatusCode::BAD_REQUEST,
            ),
            (
                CREDS,
                vec![("host", "a"), ("host", "b")],
                StatusCode::BAD_REQUEST,
            ),
            (
                "/latest/api/token",
                vec![("content-length", "5")],
                StatusCode::PAYLOAD_TOO_LARGE,
            ),
            (
                "/latest/meta-data/../user-data",
                vec![],
                StatusCode::BAD_REQUEST,
            ),
            (
                "http://169.254.169.254/latest/user-data",
                vec![],
                StatusCode::BAD_REQUEST,
            ),
        ] {
            let r = refusal(decide(&c, &Who::Unknown, &req(Method::GET, uri, &headers)));
            assert_eq!(
                (r.status, r.result, r.close),
                (status, RequestResult::BadRequest, true),
                "{uri} {headers:?}"
            );
            assert_eq!(r.audit, None);
        }
    }
}
