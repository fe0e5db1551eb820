//! The denied-connection audit log (schema and semantics in `docs/audit-log.md`).
//!
//! - [`AuditRecord`]: one JSON object per line, built from a [`Verdict`](crate::policy::Verdict),
//!   the [`Snapshot`](crate::policy::Snapshot) and the [`FlowDetails`] of a denied connection.
//!   Names are resolved only there, so allowed connections never pay for them.
//! - [`Auditor`]: the data path's cheap, cloneable handle. [`Auditor::record`] never blocks:
//!   it hands the record to a bounded channel and counts it in
//!   [`AuditMetrics::events_dropped`] when the channel is full.
//! - One writer task owns the [`Sink`] (stdout or a size-rotated file), collapses bursts of
//!   identical denials into records with an exact `count`, and writes everything pending on
//!   shutdown.
//! - [`AuditMetrics`]: `chokepoint_audit_*` counters without labels.

mod config;
mod dedupe;
mod metrics;
mod record;
mod sink;
mod time;
mod writer;

pub use config::{AuditConfig, AuditSink, DEFAULT_CHANNEL_CAPACITY};
pub use dedupe::MAX_TRACKED_KEYS;
pub use metrics::AuditMetrics;
pub use record::{
    AuditReason, AuditRecord, DecidedBy, Destination, FlowDetails, ServiceName, Source,
    StagedRecord, workload_labels,
};
pub(crate) use record::{DestinationPod, decision_text, pod_identity, protocol_text};
pub use sink::Sink;
pub use time::{ParseTimestampError, Timestamp};
pub use writer::{AuditWriter, Auditor};

#[cfg(test)]
pub(crate) mod testing {
    use std::io;
    use std::path::{Path, PathBuf};
    use std::sync::{Arc, Mutex};

    use chokepoint_config::model::Protocol;

    use super::*;
    use crate::policy::Decision;

    /// A record without a snapshot.
    pub fn sample(dst_port: u16) -> AuditRecord {
        AuditRecord {
            time: Timestamp::from_unix_millis(1_700_000_000_123),
            node: "node-1".into(),
            verdict: Decision::Deny,
            reason: AuditReason::RULE,
            source: Source {
                ip: "10.0.1.10".parse().unwrap(),
                port: 40_000,
                namespace: Some("app".into()),
                pod: Some("web".into()),
            },
            destination: Destination {
                ip: "192.0.2.10".parse().unwrap(),
                port: dst_port,
                namespace: None,
                pod: None,
                labels: None,
                protocol: Protocol::Tcp,
                names: vec!["example.com".into()],
                sni: None,
                host: None,
                method: None,
                path: None,
                service: None,
                cluster_ip: None,
            },
            decided_by: DecidedBy {
                tier: "Admin".into(),
                kind: Some("ClusterNetworkPolicy".into()),
                policy: Some("block".into()),
                namespace: None,
                priority: Some(10),
                rule: Some("no-outside".into()),
                rule_index: Some(0),
                action: Some("Deny".into()),
            },
            count: 1,
            staged: None,
            first_seen: None,
            last_seen: None,
        }
    }

    /// A `Write` whose bytes the test can read.
    #[derive(Debug, Clone, Default)]
    pub struct SharedBuf(pub Arc<Mutex<Vec<u8>>>);

    impl SharedBuf {
        pub fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    impl io::Write for SharedBuf {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A fresh directory under the system temp dir, removed on drop.
    #[derive(Debug)]
    pub struct TempDir(PathBuf);

    impl TempDir {
        pub fn new(name: &str) -> TempDir {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            let dir = std::env::temp_dir()
                .join(format!("chokepoint-{name}-{}-{nanos}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
