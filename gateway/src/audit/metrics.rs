//! Counters of the audit writer. No labels: nothing here may carry an IP or a name.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

/// The audit log's counters; cheap to clone (each counter is an `Arc` inside), so the data
/// path, the writer task and the registry share them.
///
/// Accounting: every event handed to [`Auditor::record`](super::Auditor::record) is either
/// dropped (`events_dropped`) or ends up in exactly one record, on its own (`count` 1) or
/// folded into a summary's `count` (`events_suppressed`). Every record is either written
/// (`records_written`) or fails (`write_errors`).
#[derive(Debug, Clone, Default)]
pub struct AuditMetrics {
    /// Records (lines) written to the sink.
    pub records_written: Counter,
    /// Events that got no line of their own but were counted in a summary record's `count`.
    pub events_suppressed: Counter,
    /// Events refused because the channel to the writer was full (or the writer had stopped).
    pub events_dropped: Counter,
    /// Failed writes (the record is lost) and failed rotations (the record goes to the old
    /// file instead).
    pub write_errors: Counter,
}

impl AuditMetrics {
    /// Registers the counters as `chokepoint_audit_*_total` (in a registry without a prefix of
    /// its own, like the gateway's).
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("chokepoint_audit");
        r.register(
            "records_written",
            "Audit records written to the sink",
            self.records_written.clone(),
        );
        r.register(
            "events_suppressed",
            "Denials collapsed into the count of a summary audit record",
            self.events_suppressed.clone(),
        );
        r.register(
            "events_dropped",
            "Denials not audited because the audit channel was full or closed",
            self.events_dropped.clone(),
        );
        r.register(
            "write_errors",
            "Audit sink write or rotation errors",
            self.write_errors.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_prefixed_counters_without_labels() {
        let m = AuditMetrics::default();
        let mut registry = Registry::default();
        m.register(&mut registry);
        m.records_written.inc_by(3);
        m.events_dropped.inc();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "chokepoint_audit_records_written_total 3",
            "chokepoint_audit_events_suppressed_total 0",
            "chokepoint_audit_events_dropped_total 1",
            "chokepoint_audit_write_errors_total 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        assert!(!text.contains('{'), "no labels: {text}");
    }
}
