//! The request shapes `allowPaths` lists: `[METHOD[,METHOD…] ]/path`.

use std::fmt;

use serde::{Serialize, Serializer};

/// One allowed request shape: methods and a path pattern (`*` stands for one whole segment;
/// a trailing `/` is ignored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    /// Upper-case method names.
    pub methods: Vec<String>,
    pub segments: Vec<PathSegment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathSegment {
    Literal(String),
    /// `*`: any one segment.
    Any,
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ", self.methods.join(","))?;
        if self.segments.is_empty() {
            return f.write_str("/");
        }
        for s in &self.segments {
            match s {
                PathSegment::Literal(l) => write!(f, "/{l}")?,
                PathSegment::Any => f.write_str("/*")?,
            }
        }
        Ok(())
    }
}

impl Serialize for PathPattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl PathPattern {
    /// `[METHOD[,METHOD…] ]/path`; without methods, `GET,HEAD`.
    pub fn parse(text: &str) -> Result<PathPattern, String> {
        let text = text.trim();
        let (methods, path) = match text.split_once(' ') {
            Some((m, p)) => (m, p.trim()),
            None => ("GET,HEAD", text),
        };
        let methods: Vec<String> = methods.split(',').map(str::to_owned).collect();
        if let Some(bad) = methods
            .iter()
            .find(|m| m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()))
        {
            return Err(format!(
                "`{bad}` is not a method; write upper-case names like `GET` or `PUT`, comma-separated"
            ));
        }
        let Some(rest) = path.strip_prefix('/') else {
            return Err(format!(
                "`{path}` must start with `/`, e.g. `GET /latest/meta-data/instance-id`"
            ));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let mut segments = Vec::new();
        if !rest.is_empty() {
            for seg in rest.split('/') {
                segments.push(match seg {
                    "*" => PathSegment::Any,
                    "" => return Err(format!("`{path}` has an empty segment (`//`)")),
                    "." | ".." => return Err(format!("`{path}` has a `{seg}` segment")),
                    s if s.contains('*') => {
                        return Err(format!(
                            "`{s}`: `*` stands for a whole segment only (`/a/*/b`)"
                        ));
                    }
                    s if !s.bytes().all(is_path_byte) => {
                        return Err(format!(
                            "`{s}` has a character paths here may not have (letters, digits and `-._~:@!$&'()+,;=` only; no `%`)"
                        ));
                    }
                    s => PathSegment::Literal(s.to_owned()),
                });
            }
        }
        Ok(PathPattern { methods, segments })
    }
}

/// The bytes a metadata path segment may contain: RFC 3986 `pchar` without percent-encoding
/// (which would let `%2F` or `%2e%2e` hide a segment boundary from the check).
pub fn is_path_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~:@!$&'()+,;=".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::defaults::metadata as defaults;

    #[test]
    fn path_patterns() {
        let p = PathPattern::parse("/latest/meta-data/instance-id/").unwrap();
        assert_eq!(p.methods, ["GET", "HEAD"]);
        assert_eq!(p.to_string(), "GET,HEAD /latest/meta-data/instance-id");
        let p = PathPattern::parse("PUT /*/api/token").unwrap();
        assert_eq!(p.segments[0], PathSegment::Any);
        assert_eq!(p.to_string(), "PUT /*/api/token");
        assert_eq!(PathPattern::parse("GET /").unwrap().to_string(), "GET /");
        for bad in [
            "latest/user-data",
            "get /x",
            "GET /a//b",
            "GET /a/../b",
            "GET /a/b*",
            "GET /a/%2e%2e",
            "GET, /x",
        ] {
            assert!(PathPattern::parse(bad).is_err(), "{bad}");
        }
        for d in defaults::PATHS {
            assert!(PathPattern::parse(d).is_ok(), "{d}");
        }
    }
}
