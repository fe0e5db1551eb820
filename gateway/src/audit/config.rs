//! Settings of the audit writer.

use std::path::PathBuf;
use std::time::Duration;

pub use chokepoint_config::settings::AuditSink;
use chokepoint_config::settings::{self, defaults};
use serde::{Deserialize, Serialize};

/// Default capacity of the channel between the data path and the writer task.
pub const DEFAULT_CHANNEL_CAPACITY: usize = 8192;

/// How the audit log is written. Every field has a default (`AuditConfig::default()`):
///
/// | field | default | meaning |
/// |---|---|---|
/// | `sink` | `stdout` | `stdout` or `file` |
/// | `path` | none | the log file, required with `sink: file` |
/// | `maxBytes` | 100 MiB | a file is rotated before a line would make it larger than this |
/// | `maxFiles` | 5 | rotated files kept: `path.1` (newest) … `path.N` (oldest); 0 counts as 1 |
/// | `dedupeWindow` | `1s` | identical denials inside this window collapse into one record with a count; `0s` turns de-duplication off |
/// | `channelCapacity` | 8192 | events the data path may queue ahead of the writer; beyond that they are dropped and counted |
///
/// Durations are written like the gateway settings: `500ms`, `1s`, `2m`, `1m30s`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditConfig {
    pub sink: AuditSink,
    pub path: Option<PathBuf>,
    pub max_bytes: u64,
    pub max_files: u32,
    #[serde(with = "duration_text")]
    pub dedupe_window: Duration,
    pub channel_capacity: usize,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            sink: defaults::AUDIT_SINK,
            path: None,
            max_bytes: defaults::AUDIT_MAX_BYTES,
            max_files: defaults::AUDIT_MAX_FILES,
            dedupe_window: Duration::from_millis(defaults::DEDUPE_WINDOW_MS),
            channel_capacity: DEFAULT_CHANNEL_CAPACITY,
        }
    }
}

impl From<&settings::Audit> for AuditConfig {
    /// The `audit` section of the gateway settings file (which has no channel capacity).
    fn from(a: &settings::Audit) -> Self {
        AuditConfig {
            sink: a.sink,
            path: a.path.clone(),
            max_bytes: a.max_bytes,
            max_files: a.max_files,
            dedupe_window: a.dedupe_window,
            ..AuditConfig::default()
        }
    }
}

mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{}ms", d.as_millis()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        if s == "0" {
            return Ok(Duration::ZERO);
        }
        chokepoint_config::settings::parse_duration(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "`{s}` is not a duration; write e.g. `500ms`, `1s` or `2m`"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_missing_fields() {
        let c: AuditConfig = serde_json::from_str(
            r#"{"sink":"file","path":"/var/log/a.log","dedupeWindow":"250ms"}"#,
        )
        .unwrap();
        assert_eq!(
            c,
            AuditConfig {
                sink: AuditSink::File,
                path: Some("/var/log/a.log".into()),
                dedupe_window: Duration::from_millis(250),
                ..AuditConfig::default()
            }
        );
        let d = AuditConfig::default();
        assert_eq!(
            (
                d.sink,
                d.max_bytes,
                d.max_files,
                d.dedupe_window,
                d.channel_capacity
            ),
            (
                AuditSink::Stdout,
                100 * 1024 * 1024,
                5,
                Duration::from_secs(1),
                8192
            )
        );
        assert_eq!(serde_json::from_str::<AuditConfig>("{}").unwrap(), d);
    }

    #[test]
    fn round_trips_and_rejects_unknown_fields() {
        let d = AuditConfig::default();
        let json = serde_json::to_string(&d).unwrap();
        assert!(json.contains(r#""dedupeWindow":"1000ms""#), "{json}");
        assert_eq!(serde_json::from_str::<AuditConfig>(&json).unwrap(), d);
        assert!(serde_json::from_str::<AuditConfig>(r#"{"maxbytes":1}"#).is_err());
        assert!(serde_json::from_str::<AuditConfig>(r#"{"dedupeWindow":"soon"}"#).is_err());
        let off: AuditConfig = serde_json::from_str(r#"{"dedupeWindow":"0ms"}"#).unwrap();
        assert_eq!(off.dedupe_window, Duration::ZERO);
    }
}
