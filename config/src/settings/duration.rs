//! Durations as the settings write them (`500ms`, `5s`, `1m30s`) and as `/config_dump` shows
//! them (milliseconds).

use std::time::Duration;

use crate::compile::Checker;

/// `250ms`, `5s`, `2m`, `1h`, or combinations like `1m30s`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|ch: char| !ch.is_ascii_digit())?;
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|ch: char| ch.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.checked_mul(60)?),
            "h" => Duration::from_secs(n.checked_mul(3600)?),
            _ => return None,
        };
        total = total.checked_add(unit)?;
        rest = &rest[unit_len..];
    }
    Some(total)
}

/// A duration setting at `p`: `default` when absent; zero only where `zero_ok`.
pub(super) fn setting(
    c: &mut Checker,
    p: &str,
    v: Option<&str>,
    default: Duration,
    zero_ok: bool,
) -> Option<Duration> {
    let s = match v {
        None => return Some(default),
        Some(s) => s,
    };
    match parse_duration(s) {
        Some(d) if zero_ok || !d.is_zero() => Some(d),
        Some(_) => {
            c.error(p, format!("`{s}` must be longer than zero"));
            None
        }
        None => {
            c.error(
                p,
                format!("`{s}` is not a duration; write e.g. `500ms`, `5s`, `2m` or `1h`"),
            );
            None
        }
    }
}

/// `#[serde(with = "…::duration::text")]`: a duration shown as `NNNms`.
pub(super) mod text {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", d.as_millis()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        for bad in ["", "5", "s", "5 s", "1d", "-1s"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
