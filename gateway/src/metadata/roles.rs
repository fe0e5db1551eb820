//! kube2iam's role semantics: a pod's `iam.amazonaws.com/role` annotation, checked against its
//! namespace's `iam.amazonaws.com/allowed-roles` (a JSON list of globs matched with Go's
//! `filepath.Match`), role names completed with the base ARN.

use chokepoint_config::inventory::{NamespaceInfo, PodInfo};
use chokepoint_config::settings::RoleSettings;

/// The pod annotation naming its role (kube2iam's default `--iam-role-key`).
pub const ROLE_ANNOTATION: &str = "iam.amazonaws.com/role";
/// The namespace annotation listing the roles its pods may have (kube2iam's default
/// `--namespace-key`).
pub const ALLOWED_ROLES_ANNOTATION: &str = "iam.amazonaws.com/allowed-roles";

/// A pod's role, as far as the gateway can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role<'a> {
    /// No annotation: the endpoint's default role applies, if it has one.
    Unannotated,
    /// Annotated and allowed by the namespace (or restrictions are off).
    Allowed(&'a str),
    /// Annotated, but the namespace does not allow it.
    NotAllowed(&'a str),
}

/// The role of `pod` in `namespace` under `settings`.
pub fn role<'a>(pod: &'a PodInfo, namespace: &NamespaceInfo, settings: &RoleSettings) -> Role<'a> {
    let Some(role) = pod
        .annotations
        .get(ROLE_ANNOTATION)
        .map(|r| r.trim())
        .filter(|r| !r.is_empty())
    else {
        return Role::Unannotated;
    };
    if !settings.namespace_restriction {
        return Role::Allowed(role);
    }
    let base = settings.base_arn.as_deref();
    let arn = full_arn(role, base);
    // kube2iam: an annotation that is not a JSON list of strings allows nothing.
    let patterns: Vec<String> = namespace
        .annotations
        .get(ALLOWED_ROLES_ANNOTATION)
        .and_then(|a| serde_json::from_str(a).ok())
        .unwrap_or_default();
    if patterns
        .iter()
        .any(|p| glob_match(&full_arn(p, base), &arn) == Some(true))
    {
        Role::Allowed(role)
    } else {
        Role::NotAllowed(role)
    }
}

/// A role name completed with the base ARN (values that already are ARNs stay).
fn full_arn(role: &str, base: Option<&str>) -> String {
    match base {
        Some(base) if !role.starts_with("arn:") => format!("{base}{role}"),
        _ => role.to_owned(),
    }
}

/// The role's name as IMDS lists it under `security-credentials/`: the last component of
/// the ARN or path.
pub fn role_name(role: &str) -> &str {
    role.rsplit('/').next().unwrap_or(role)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Term {
    /// `*`: any run of characters but `/`.
    Star,
    /// `?`: one character but `/`.
    One,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
    Literal(char),
}

/// Go's `filepath.Match` on Linux: whether `name` matches `pattern` as a whole; `None` for a
/// malformed pattern (which kube2iam treats as no match).
pub fn glob_match(pattern: &str, name: &str) -> Option<bool> {
    let terms = parse_glob(pattern)?;
    let name: Vec<char> = name.chars().collect();
    Some(match_terms(&terms, &name))
}

fn parse_glob(pattern: &str) -> Option<Vec<Term>> {
    let mut terms = Vec::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        terms.push(match c {
            '*' => {
                if terms.last() == Some(&Term::Star) {
                    continue;
                }
                Term::Star
            }
            '?' => Term::One,
            '\\' => Term::Literal(chars.next()?),
            '[' => {
                let negated = chars.next_if_eq(&'^').is_some();
                let mut ranges = Vec::new();
                loop {
                    let lo = match chars.next()? {
                        ']' if !ranges.is_empty() => break,
                        ']' | '-' => return None,
                        '\\' => chars.next()?,
                        c => c,
                    };
                    let hi = if chars.next_if_eq(&'-').is_some() {
                        match chars.next()? {
                            ']' | '-' => return None,
                            '\\' => chars.next()?,
                            c => c,
                        }
                    } else {
                        lo
                    };
                    if lo > hi {
                        return None;
                    }
                    ranges.push((lo, hi));
                }
                Term::Class { negated, ranges }
            }
            c => Term::Literal(c),
        });
    }
    Some(terms)
}

fn match_terms(terms: &[Term], name: &[char]) -> bool {
    let Some((term, rest)) = terms.split_first() else {
        return name.is_empty();
    };
    match term {
        Term::Star => {
            // The shortest run first; a star never crosses `/`.
            for skip in 0..=name.len() {
                if match_terms(rest, &name[skip..]) {
                    return true;
                }
                if name.get(skip) == Some(&'/') {
                    return false;
                }
            }
            false
        }
        _ => {
            let Some((&c, tail)) = name.split_first() else {
                return false;
            };
            let ok = match term {
                Term::One => c != '/',
                Term::Literal(l) => c == *l,
                Term::Class { negated, ranges } => {
                    c != '/' && ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated
                }
                Term::Star => unreachable!("handled above"),
            };
            ok && match_terms(rest, tail)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chokepoint_config::model::Labels;

    #[test]
    fn globs_follow_go_filepath_match() {
        // Cases from Go's path/filepath match_test.go, and the ones kube2iam users write.
        let cases = [
            ("abc", "abc", Some(true)),
            ("*", "abc", Some(true)),
            ("*c", "abc", Some(true)),
            ("a*", "a", Some(true)),
            ("a*", "abc", Some(true)),
            ("a*", "ab/c", Some(false)),
            ("a*/b", "abc/b", Some(true)),
            ("a*/b", "a/c/b", Some(false)),
            ("a*b*c*d*e*/f", "axbxcxdxe/f", Some(true)),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/f", Some(true)),
            ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", Some(false)),
            ("ab[c]", "abc", Some(true)),
            ("ab[b-d]", "abc", Some(true)),
            ("ab[e-g]", "abc", Some(false)),
            ("ab[^c]", "abc", Some(false)),
            ("ab[^b-d]", "abc", Some(false)),
            ("ab[^e-g]", "abc", Some(true)),
            ("a\\*b", "a*b", Some(true)),
            ("a\\*b", "ab", Some(false)),
            ("a?b", "a☺b", Some(true)),
            ("a?b", "a/b", Some(false)),
            ("[\\]a]", "]", Some(true)),
            ("[\\-]", "-", Some(true)),
            ("[x\\-]", "z", Some(false)),
            ("[", "a", None),
            ("[^", "a", None),
            ("[^bc", "a", None),
            ("a[", "a", None),
            ("[a-]", "a", None),
            ("[]a]", "]", None),
            ("a\\", "a", None),
            ("[z-a]", "a", None),
            (
                "arn:aws:iam::123456789012:role/app-*",
                "arn:aws:iam::123456789012:role/app-reader",
                Some(true),
            ),
            (
                "arn:aws:iam::123456789012:role/*",
                "arn:aws:iam::123456789012:role/team/app",
                Some(false),
            ),
        ];
        for (pattern, name, want) in cases {
            assert_eq!(glob_match(pattern, name), want, "{pattern:?} vs {name:?}");
        }
    }

    fn pod(role: Option<&str>) -> PodInfo {
        PodInfo {
            namespace: "aws".into(),
            name: "app".into(),
            uid: None,
            labels: Labels::new(),
            ips: Vec::new(),
            host_network: false,
            node_name: None,
            ports: Vec::new(),
            service_account: None,
            annotations: role
                .map(|r| Labels::from([(ROLE_ANNOTATION.to_owned(), r.to_owned())]))
                .unwrap_or_default(),
        }
    }

    fn namespace(allowed: Option<&str>) -> NamespaceInfo {
        NamespaceInfo {
            annotations: allowed
                .map(|a| Labels::from([(ALLOWED_ROLES_ANNOTATION.to_owned(), a.to_owned())]))
                .unwrap_or_default(),
            ..NamespaceInfo::new("aws", Labels::new())
        }
    }

    fn settings(restrict: bool, base: Option<&str>) -> RoleSettings {
        RoleSettings {
            namespace_restriction: restrict,
            base_arn: base.map(str::to_owned),
        }
    }

    #[test]
    fn roles_are_checked_against_the_namespace_like_kube2iam() {
        let on = settings(true, None);
        let ns = namespace(Some(r#"["app-*", "arn:aws:iam::1:role/exact"]"#));
        assert_eq!(role(&pod(None), &ns, &on), Role::Unannotated);
        assert_eq!(
            role(&pod(Some("app-reader")), &ns, &on),
            Role::Allowed("app-reader")
        );
        assert_eq!(
            role(&pod(Some("admin")), &ns, &on),
            Role::NotAllowed("admin")
        );
        assert_eq!(
            role(&pod(Some("arn:aws:iam::1:role/exact")), &ns, &on),
            Role::Allowed("arn:aws:iam::1:role/exact")
        );
        // No annotation, or one that is not a JSON list: nothing is allowed.
        for ns in [namespace(None), namespace(Some("app-*"))] {
            assert_eq!(
                role(&pod(Some("app-reader")), &ns, &on),
                Role::NotAllowed("app-reader")
            );
        }
        // Restrictions off: any annotated role.
        assert_eq!(
            role(
                &pod(Some("admin")),
                &namespace(None),
                &settings(false, None)
            ),
            Role::Allowed("admin")
        );
    }

    #[test]
    fn the_base_arn_completes_names_on_both_sides() {
        let base = settings(true, Some("arn:aws:iam::123456789012:role/"));
        let ns = namespace(Some(r#"["arn:aws:iam::123456789012:role/app-*"]"#));
        assert_eq!(
            role(&pod(Some("app-reader")), &ns, &base),
            Role::Allowed("app-reader")
        );
        let ns = namespace(Some(r#"["app-*"]"#));
        assert_eq!(
            role(
                &pod(Some("arn:aws:iam::123456789012:role/app-reader")),
                &ns,
                &base
            ),
            Role::Allowed("arn:aws:iam::123456789012:role/app-reader")
        );
        // Without a base ARN a name and an ARN never match each other.
        assert_eq!(
            role(
                &pod(Some("arn:aws:iam::123456789012:role/app-reader")),
                &ns,
                &settings(true, None)
            ),
            Role::NotAllowed("arn:aws:iam::123456789012:role/app-reader")
        );
    }

    #[test]
    fn role_names_are_the_last_component() {
        assert_eq!(role_name("arn:aws:iam::1:role/team/app"), "app");
        assert_eq!(role_name("app"), "app");
    }
}
