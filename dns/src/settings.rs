//! [`DnsSettings`]: how the DNS proxy and the observation cache are configured.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Error;

/// Defaults, named so that docs and code agree.
pub mod defaults {
    use std::time::Duration;

    /// Port of the DNS proxy (UDP and TCP); the same as `chokepoint_redirect::DEFAULT_DNS_PORT`.
    pub const LISTEN_PORT: u16 = 15053;
    /// Where the upstream comes from when none is configured.
    pub const RESOLV_CONF: &str = "/etc/resolv.conf";
    /// A query that has no trusted answer after this long is answered SERVFAIL.
    pub const TIMEOUT: Duration = Duration::from_secs(2);
    /// Answers with a shorter TTL are remembered this long.
    pub const MIN_TTL: Duration = Duration::from_secs(5);
    /// Answers with a longer TTL are remembered only this long.
    pub const MAX_TTL: Duration = Duration::from_secs(3600);
    /// Added to every (clamped) TTL: new connections are still allowed this long after expiry.
    pub const GRACE: Duration = Duration::from_secs(30);
    /// Observations `(namespace, name, IP)` kept at most (about 200 bytes each).
    pub const MAX_ENTRIES: usize = 100_000;
    /// A pod's TCP connection to the proxy with no query in flight is closed after this long.
    pub const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
    /// Queries being forwarded at once; UDP queries beyond it are dropped, TCP ones wait.
    pub const MAX_IN_FLIGHT: usize = 4096;
    /// Pod TCP connections to the proxy at once; more are closed at once.
    pub const MAX_TCP_CONNECTIONS: usize = 1024;
    /// The fewest cache entries a configuration may ask for: NPEP-133 wants at least 100 IPs
    /// per name.
    pub const MIN_ENTRIES: usize = 100;
}

/// Settings of the DNS proxy and its observation cache.
///
/// Every key is optional (`#[serde(default)]`); unknown keys are errors. Durations are written
/// as `"500ms"`, `"2s"`, `"5m"`, `"1h"` or a bare number of seconds, and are serialized in
/// milliseconds (`"2000ms"`), like the gateway's other settings.
///
/// ```yaml
/// upstream: 10.96.0.10:53   # default: the first nameserver of /etc/resolv.conf
/// timeout: 2s
/// minTtl: 5s
/// maxTtl: 1h
/// grace: 30s
/// maxEntries: 100000
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct DnsSettings {
    /// The canonical name server every query is forwarded to (NPEP-133: only its answers are
    /// trusted). `None` (the default): the first `nameserver` of `/etc/resolv.conf`, port 53.
    /// A gateway with `hostNetwork: true` should run with `dnsPolicy: ClusterFirstWithHostNet`
    /// (so that file names the cluster DNS) or set this explicitly.
    pub upstream: Option<SocketAddr>,
    /// Port the proxy listens on, UDP and TCP (default 15053). The capture rules send pod DNS
    /// here (`CaptureSpec::dns_port`).
    pub listen_port: u16,
    /// How long a query may take end to end, TCP fallback included, before the pod gets
    /// SERVFAIL (default 2 s).
    #[serde(with = "duration_text")]
    pub timeout: Duration,
    /// Lower clamp of an answer's TTL (default 5 s).
    #[serde(with = "duration_text")]
    pub min_ttl: Duration,
    /// Upper clamp of an answer's TTL (default 1 h).
    #[serde(with = "duration_text")]
    pub max_ttl: Duration,
    /// Extra time after the clamped TTL during which new connections are still allowed
    /// (default 30 s). Existing connections are never cut by expiry.
    #[serde(with = "duration_text")]
    pub grace: Duration,
    /// Most `(namespace, name, IP)` observations kept (default 100 000, at least 100). When
    /// full, the entry closest to expiry is evicted and counted.
    pub max_entries: usize,
    /// Idle timeout of a pod's TCP connection to the proxy (default 10 s).
    #[serde(with = "duration_text")]
    pub tcp_idle_timeout: Duration,
    /// Queries forwarded at once (default 4096). UDP queries beyond it are dropped (the pod
    /// retries), TCP queries wait.
    pub max_in_flight: usize,
    /// Pod TCP connections at once (default 1024); more are closed as soon as accepted.
    pub max_tcp_connections: usize,
}

impl Default for DnsSettings {
    fn default() -> Self {
        DnsSettings {
            upstream: None,
            listen_port: defaults::LISTEN_PORT,
            timeout: defaults::TIMEOUT,
            min_ttl: defaults::MIN_TTL,
            max_ttl: defaults::MAX_TTL,
            grace: defaults::GRACE,
            max_entries: defaults::MAX_ENTRIES,
            tcp_idle_timeout: defaults::TCP_IDLE_TIMEOUT,
            max_in_flight: defaults::MAX_IN_FLIGHT,
            max_tcp_connections: defaults::MAX_TCP_CONNECTIONS,
        }
    }
}

impl DnsSettings {
    /// Checks the settings and reports every problem at once.
    pub fn validate(&self) -> Result<(), Error> {
        let mut problems = Vec::new();
        if self.listen_port == 0 {
            problems.push("listenPort is 0".to_string());
        }
        if let Some(upstream) = self.upstream {
            if upstream.port() == 0 {
                problems.push(format!("upstream {upstream} has port 0"));
            }
            if upstream.ip().is_unspecified() {
                problems.push(format!("upstream {upstream} is the unspecified address"));
            }
        }
        if self.timeout.is_zero() {
            problems.push("timeout is 0".to_string());
        } else if self.timeout > Duration::from_secs(60) {
            problems.push(format!(
                "timeout {:?} is longer than 60s: pods would hang",
                self.timeout
            ));
        }
        if self.min_ttl > self.max_ttl {
            problems.push(format!(
                "minTtl {:?} is greater than maxTtl {:?}",
                self.min_ttl, self.max_ttl
            ));
        }
        if self.max_entries < defaults::MIN_ENTRIES {
            problems.push(format!(
                "maxEntries {} is below {} (NPEP-133 asks for at least 100 IPs per name)",
                self.max_entries,
                defaults::MIN_ENTRIES
            ));
        }
        if self.tcp_idle_timeout.is_zero() {
            problems.push("tcpIdleTimeout is 0".to_string());
        }
        if self.max_in_flight == 0 {
            problems.push("maxInFlight is 0".to_string());
        }
        if self.max_tcp_connections == 0 {
            problems.push("maxTcpConnections is 0".to_string());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidSettings(problems))
        }
    }

    /// The upstream to forward to: [`upstream`](Self::upstream) when set, else the first
    /// `nameserver` of `/etc/resolv.conf`.
    pub fn resolve_upstream(&self) -> Result<SocketAddr, Error> {
        match self.upstream {
            Some(addr) => Ok(addr),
            None => crate::resolv::upstream_from_file(Path::new(defaults::RESOLV_CONF)),
        }
    }
}

/// Durations as text: `"250ms"`, `"2s"`, `"5m"`, `"1h"`, or a bare number of seconds.
mod duration_text {
    use std::fmt;
    use std::time::Duration;

    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", d.as_millis()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_any(DurationVisitor)
    }

    struct DurationVisitor;

    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(
                "a duration such as \"500ms\", \"2s\", \"5m\", \"1h\" or a number of seconds",
            )
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
            Ok(Duration::from_secs(v))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
            u64::try_from(v)
                .map(Duration::from_secs)
                .map_err(|_| E::custom(format!("negative duration {v}")))
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            parse(v).ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self))
        }
    }

    pub(super) fn parse(text: &str) -> Option<Duration> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let n: u64 = number.parse().ok()?;
        let millis = match unit.trim() {
            "ms" => n,
            "" | "s" => n.checked_mul(1000)?,
            "m" => n.checked_mul(60_000)?,
            "h" => n.checked_mul(3_600_000)?,
            _ => return None,
        };
        Some(Duration::from_millis(millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let s = DnsSettings::default();
        s.validate().unwrap();
        assert_eq!(s.listen_port, chokepoint_redirect::DEFAULT_DNS_PORT);
        assert_eq!(s.timeout, Duration::from_secs(2));
        assert_eq!(s.upstream, None);
    }

    #[test]
    fn durations_parse_in_every_unit() {
        for (text, want) in [
            ("250ms", Duration::from_millis(250)),
            ("2s", Duration::from_secs(2)),
            ("2", Duration::from_secs(2)),
            ("5m", Duration::from_secs(300)),
            ("1h", Duration::from_secs(3600)),
        ] {
            assert_eq!(duration_text::parse(text), Some(want), "{text}");
        }
        for bad in ["", "s", "1d", "-1s", "1.5s", "99999999999999999999h"] {
            assert_eq!(duration_text::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn serde_round_trip_and_unknown_keys() {
        let s: DnsSettings = serde_json::from_str(
            r#"{"upstream":"192.0.2.53:53","timeout":"500ms","minTtl":1,"maxTtl":"1h","grace":"0s","maxEntries":1000}"#,
        )
        .unwrap();
        assert_eq!(s.upstream, Some("192.0.2.53:53".parse().unwrap()));
        assert_eq!(s.timeout, Duration::from_millis(500));
        assert_eq!(s.min_ttl, Duration::from_secs(1));
        assert_eq!(s.grace, Duration::ZERO);
        assert_eq!(s.max_entries, 1000);
        assert_eq!(s.listen_port, defaults::LISTEN_PORT);
        let text = serde_json::to_string(&s).unwrap();
        assert!(text.contains(r#""timeout":"500ms""#), "{text}");
        let back: DnsSettings = serde_json::from_str(&text).unwrap();
        assert_eq!(back, s);

        let err = serde_json::from_str::<DnsSettings>(r#"{"upstreams":"x"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
        let err = serde_json::from_str::<DnsSettings>(r#"{"timeout":"2 weeks"}"#).unwrap_err();
        assert!(err.to_string().contains("2 weeks"), "{err}");
    }

    #[test]
    fn every_problem_is_reported() {
        let s = DnsSettings {
            upstream: Some("0.0.0.0:0".parse().unwrap()),
            listen_port: 0,
            timeout: Duration::ZERO,
            min_ttl: Duration::from_secs(10),
            max_ttl: Duration::from_secs(5),
            max_entries: 10,
            tcp_idle_timeout: Duration::ZERO,
            max_in_flight: 0,
            max_tcp_connections: 0,
            ..DnsSettings::default()
        };
        let Err(Error::InvalidSettings(problems)) = s.validate() else {
            panic!("expected InvalidSettings");
        };
        assert_eq!(problems.len(), 9, "{problems:#?}");
    }
}
