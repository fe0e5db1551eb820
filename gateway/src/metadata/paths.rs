//! Which requests may reach the metadata server: the request target's shape, and the
//! allowlist of methods and paths (global and per namespace).

use std::collections::HashMap;

use chokepoint_config::settings::{MetadataSettings, PathPattern, PathSegment, is_path_byte};
use hyper::{Method, Uri};

/// Why a request target is refused before the allowlist is consulted (`400`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadTarget {
    /// `http://host/…` or `host:port` instead of a path.
    NotOriginForm,
    /// `.` or `..` segments, which servers resolve differently.
    DotSegment,
    /// `//` inside the path.
    EmptySegment,
    /// Percent-encoding or a byte outside the path alphabet: `%2F` and `%2e%2e` would hide
    /// segment boundaries from the check.
    Encoded,
}

impl BadTarget {
    pub fn message(self) -> &'static str {
        match self {
            BadTarget::NotOriginForm => "the request target must be a path (`GET /latest/...`)",
            BadTarget::DotSegment => "`.` and `..` path segments are not accepted",
            BadTarget::EmptySegment => "empty path segments (`//`) are not accepted",
            BadTarget::Encoded => {
                "percent-encoded or unusual characters in the path are not accepted"
            }
        }
    }
}

/// The path's segments (a trailing `/` is ignored), or why the target is refused.
pub fn segments(uri: &Uri) -> Result<Vec<&str>, BadTarget> {
    if uri.scheme().is_some() || uri.authority().is_some() {
        return Err(BadTarget::NotOriginForm);
    }
    let Some(rest) = uri.path().strip_prefix('/') else {
        return Err(BadTarget::NotOriginForm);
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    rest.split('/')
        .map(|s| match s {
            "" => Err(BadTarget::EmptySegment),
            "." | ".." => Err(BadTarget::DotSegment),
            s if !s.bytes().all(is_path_byte) => Err(BadTarget::Encoded),
            s => Ok(s),
        })
        .collect()
}

/// The allowlist.
#[derive(Debug, Clone, Default)]
pub struct PathPolicy {
    global: Vec<PathPattern>,
    namespaces: HashMap<String, Vec<PathPattern>>,
}

impl PathPolicy {
    pub fn new(settings: &MetadataSettings) -> PathPolicy {
        PathPolicy {
            global: settings.paths.clone(),
            namespaces: settings
                .namespace_paths
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }

    /// Whether a pod of `namespace` (`None`: no known pod) may send this request.
    pub fn allows(&self, namespace: Option<&str>, method: &Method, segments: &[&str]) -> bool {
        let extra = namespace.and_then(|ns| self.namespaces.get(ns));
        self.global
            .iter()
            .chain(extra.into_iter().flatten())
            .any(|p| matches(p, method, segments))
    }
}

fn matches(p: &PathPattern, method: &Method, segments: &[&str]) -> bool {
    p.methods.iter().any(|m| m == method.as_str())
        && p.segments.len() == segments.len()
        && p.segments.iter().zip(segments).all(|(p, s)| match p {
            PathSegment::Any => true,
            PathSegment::Literal(l) => l == s,
        })
}

/// For `/<version>/meta-data/iam/security-credentials[/<role>]`: `Some(None)` for the
/// listing, `Some(Some(role))` for one role's credentials; `None` for every other path.
pub fn credentials_request<'a>(segments: &[&'a str]) -> Option<Option<&'a str>> {
    match segments {
        [_, "meta-data", "iam", "security-credentials"] => Some(None),
        [_, "meta-data", "iam", "security-credentials", role] => Some(Some(role)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &str) -> Uri {
        s.parse().unwrap()
    }

    fn policy(namespace_paths: &[(&str, &str)]) -> PathPolicy {
        let mut s = MetadataSettings::default();
        for (ns, p) in namespace_paths {
            s.namespace_paths
                .entry((*ns).to_owned())
                .or_default()
                .push(PathPattern::parse(p).unwrap());
        }
        PathPolicy::new(&s)
    }

    #[test]
    fn targets_must_be_plain_paths() {
        assert_eq!(
            segments(&uri("/latest/meta-data/iam/security-credentials/")),
            Ok(vec!["latest", "meta-data", "iam", "security-credentials"])
        );
        assert_eq!(segments(&uri("/")), Ok(vec![]));
        assert_eq!(
            segments(&uri("/latest/api/token?x=1")),
            Ok(vec!["latest", "api", "token"])
        );
        for (target, why) in [
            (
                "http://169.254.169.254/latest/user-data",
                BadTarget::NotOriginForm,
            ),
            ("169.254.169.254:80", BadTarget::NotOriginForm),
            ("*", BadTarget::NotOriginForm),
            ("/latest/meta-data/../user-data", BadTarget::DotSegment),
            ("/latest/./user-data", BadTarget::DotSegment),
            ("/latest//user-data", BadTarget::EmptySegment),
            ("/latest/%75ser-data", BadTarget::Encoded),
            (
                "/latest/meta-data/iam/security-credentials/%2e%2e",
                BadTarget::Encoded,
            ),
        ] {
            assert_eq!(segments(&uri(target)), Err(why), "{target}");
        }
    }

    #[test]
    fn the_defaults_allow_tokens_credentials_and_the_region_only() {
        let p = policy(&[]);
        let allowed = |method: Method, path: &str| {
            p.allows(Some("aws"), &method, &segments(&uri(path)).unwrap())
        };
        assert!(allowed(Method::PUT, "/latest/api/token"));
        assert!(!allowed(Method::GET, "/latest/api/token"));
        assert!(allowed(
            Method::GET,
            "/latest/meta-data/iam/security-credentials/"
        ));
        assert!(allowed(
            Method::GET,
            "/latest/meta-data/iam/security-credentials/app"
        ));
        assert!(allowed(
            Method::HEAD,
            "/2021-07-15/meta-data/iam/security-credentials/app"
        ));
        assert!(!allowed(
            Method::PUT,
            "/latest/meta-data/iam/security-credentials/app"
        ));
        assert!(!allowed(
            Method::GET,
            "/latest/meta-data/iam/security-credentials/a/b"
        ));
        assert!(allowed(
            Method::GET,
            "/latest/meta-data/placement/availability-zone/"
        ));
        assert!(allowed(Method::GET, "/latest/meta-data/placement/region"));
        for denied in [
            "/latest/user-data",
            "/latest/user-data/",
            "/latest/dynamic/instance-identity/document",
            "/latest/dynamic/instance-identity/pkcs7",
            "/latest/meta-data/iam/info",
            "/latest/meta-data/",
            "/latest/meta-data/local-ipv4",
            "/",
        ] {
            assert!(!allowed(Method::GET, denied), "{denied}");
        }
    }

    #[test]
    fn namespaces_get_their_own_extra_paths() {
        let p = policy(&[("ci", "/latest/user-data")]);
        let target = uri("/latest/user-data");
        let user_data = segments(&target).unwrap();
        assert!(p.allows(Some("ci"), &Method::GET, &user_data));
        assert!(!p.allows(Some("web"), &Method::GET, &user_data));
        assert!(!p.allows(None, &Method::GET, &user_data));
    }

    #[test]
    fn credentials_requests_are_recognised() {
        let check = |p: &str, want: Option<Option<&str>>| {
            let target = uri(p);
            assert_eq!(
                credentials_request(&segments(&target).unwrap()),
                want,
                "{p}"
            );
        };
        check("/latest/meta-data/iam/security-credentials/", Some(None));
        check(
            "/latest/meta-data/iam/security-credentials/app",
            Some(Some("app")),
        );
        check("/latest/meta-data/iam/info", None);
    }
}
