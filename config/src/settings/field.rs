//! The value checks the sections share: names from a fixed set, counts, ranges and ports.
//! Each returns the value (the default when the key is absent) or reports a located error
//! and returns `None`.

use std::ops::RangeInclusive;

use crate::compile::Checker;

/// A setting written as one of a few names (`mode: tproxy`).
pub trait Choice: Copy + 'static {
    /// What the setting is called in an error: "unknown {WHAT} `x`".
    const WHAT: &'static str;
    /// Every name with its value, in the order an error lists them.
    const NAMES: &'static [(&'static str, Self)];

    /// The value written as `name`.
    fn from_name(name: &str) -> Option<Self> {
        Self::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(_, value)| value)
    }
}

/// A [`Choice`] at `p`; an unknown name is reported with the names allowed.
pub(super) fn choice<T: Choice>(
    c: &mut Checker,
    p: &str,
    v: Option<&str>,
    default: T,
) -> Option<T> {
    let Some(text) = v else {
        return Some(default);
    };
    let found = T::from_name(text);
    if found.is_none() {
        c.error(
            p,
            format!("unknown {} `{text}`; use {}", T::WHAT, alternatives::<T>()),
        );
    }
    found
}

/// `a or b`, `a, b or c`.
fn alternatives<T: Choice>() -> String {
    let names: Vec<&str> = T::NAMES.iter().map(|(n, _)| *n).collect();
    match names.split_last() {
        Some((last, [])) => (*last).to_owned(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// A count from `min` up; `why` is appended to the advice.
pub(super) fn count(
    c: &mut Checker,
    p: &str,
    v: Option<i64>,
    default: usize,
    min: usize,
    why: &str,
) -> Option<usize> {
    let Some(n) = v else {
        return Some(default);
    };
    match usize::try_from(n) {
        Ok(n) if n >= min => Some(n),
        _ => {
            c.error(p, format!("{n} is too small; use at least {min}{why}"));
            None
        }
    }
}

/// A number inside `range`; `advice` follows "N is out of range; ".
pub(super) fn bounded(
    c: &mut Checker,
    p: &str,
    v: Option<i64>,
    default: i64,
    range: RangeInclusive<i64>,
    advice: &str,
) -> Option<i64> {
    match v {
        None => Some(default),
        Some(n) if range.contains(&n) => Some(n),
        Some(n) => {
            c.error(p, format!("{n} is out of range; {advice}"));
            None
        }
    }
}

/// A TCP/UDP port.
pub(super) fn port(c: &mut Checker, p: &str, v: Option<i64>, default: u16) -> Option<u16> {
    match v {
        None => Some(default),
        Some(n) => crate::compile::port_number(c, p, n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Three {
        A,
        B,
        C,
    }

    impl Choice for Three {
        const WHAT: &'static str = "letter";
        const NAMES: &'static [(&'static str, Self)] =
            &[("a", Three::A), ("b", Three::B), ("c", Three::C)];
    }

    #[test]
    fn an_unknown_name_is_reported_with_every_allowed_one() {
        let mut c = Checker::new(Vec::new(), crate::UnknownFields::Reject);
        assert_eq!(choice(&mut c, "/x", None, Three::B), Some(Three::B));
        assert_eq!(choice(&mut c, "/x", Some("c"), Three::A), Some(Three::C));
        assert_eq!(choice(&mut c, "/x", Some("d"), Three::A), None);
        assert_eq!(c.findings.len(), 1);
        assert_eq!(c.findings[0].pointer, "/x");
        assert_eq!(c.findings[0].message, "unknown letter `d`; use a, b or c");
    }
}
