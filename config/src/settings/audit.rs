//! `audit:`: where audit records go and how the file is rotated (the sink part is shared with
//! `flows:`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::field::{self, Choice};
use super::{defaults, duration};
use crate::compile::Checker;

/// Where audit records go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditSink {
    Stdout,
    File,
}

impl Choice for AuditSink {
    const WHAT: &'static str = "audit sink";
    const NAMES: &'static [(&'static str, Self)] =
        &[("stdout", AuditSink::Stdout), ("file", AuditSink::File)];
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Audit {
    pub sink: AuditSink,
    /// With `sink: file`.
    pub path: Option<PathBuf>,
    /// A file is rotated when it would grow past this size.
    pub max_bytes: u64,
    /// Rotated files kept (`path.1` … `path.N`).
    pub max_files: u32,
    /// Identical denials inside this window collapse into one record with a count.
    #[serde(with = "duration::text")]
    pub dedupe_window: Duration,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RawAudit {
    sink: Option<String>,
    path: Option<String>,
    max_bytes: Option<i64>,
    max_files: Option<i64>,
    dedupe_window: Option<String>,
}

/// The smallest file worth rotating.
const MIN_BYTES: usize = 4096;

/// A relative `path` resolves against `base`, the settings file's directory.
pub(super) fn validate(c: &mut Checker, raw: RawAudit, base: &Path) -> Option<Audit> {
    let file = log_file(
        c,
        "/audit",
        RawLogFile {
            sink: raw.sink,
            path: raw.path,
            max_bytes: raw.max_bytes,
            max_files: raw.max_files,
        },
        base,
    );
    // `0s` turns de-duplication off (every denial is written at once).
    let dedupe_window = duration::setting(
        c,
        "/audit/dedupeWindow",
        raw.dedupe_window.as_deref(),
        Duration::from_millis(defaults::DEDUPE_WINDOW_MS),
        true,
    );
    let (sink, path, max_bytes, max_files) = file?;
    Some(Audit {
        sink,
        path,
        max_bytes,
        max_files,
        dedupe_window: dedupe_window?,
    })
}

/// Where a log goes, as written (shared by `audit:` and `flows:`).
pub(super) struct RawLogFile {
    pub sink: Option<String>,
    pub path: Option<String>,
    pub max_bytes: Option<i64>,
    pub max_files: Option<i64>,
}

/// Validates a log's sink, path and rotation under `section`: `(sink, path, maxBytes,
/// maxFiles)`.
pub(super) fn log_file(
    c: &mut Checker,
    section: &str,
    raw: RawLogFile,
    base: &Path,
) -> Option<(AuditSink, Option<PathBuf>, u64, u32)> {
    let sink = field::choice(
        c,
        &format!("{section}/sink"),
        raw.sink.as_deref(),
        defaults::AUDIT_SINK,
    );
    let path = raw.path.map(|p| base.join(p));
    if sink == Some(AuditSink::File) && path.is_none() {
        c.error(section, "`path` is required with `sink: file`");
    }
    let max_bytes = field::count(
        c,
        &format!("{section}/maxBytes"),
        raw.max_bytes,
        defaults::AUDIT_MAX_BYTES as usize,
        MIN_BYTES,
        "",
    );
    let max_files = field::bounded(
        c,
        &format!("{section}/maxFiles"),
        raw.max_files,
        defaults::AUDIT_MAX_FILES.into(),
        1..=1000,
        "keep 1 to 1000 rotated files",
    );
    Some((sink?, path, max_bytes? as u64, max_files? as u32))
}
