//! Counters of the flow log. No labels: nothing here may carry an IP or a name.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

/// The flow log's counters, shared by the data path, the aggregator and the registry.
///
/// Accounting: every allowed flow of a covered namespace is counted in exactly one of: a
/// record's `count` (`flows_itemized`), a window's `unitemized.flows` (`flows_unitemized`,
/// the key bound was reached) or `unitemized.dropped` (`events_dropped`, the channel was full).
#[derive(Debug, Clone, Default)]
pub struct FlowLogMetrics {
    /// Lines written to the sink (records and `unitemized` lines).
    pub records_written: Counter,
    /// Flows counted in a record.
    pub flows_itemized: Counter,
    /// Flows counted only in a window's `unitemized.flows` (more distinct keys than
    /// `flows.maxKeys`).
    pub flows_unitemized: Counter,
    /// Events refused because the channel to the aggregator was full (or it had stopped).
    pub events_dropped: Counter,
    /// Failed writes (the line is lost) and failed rotations.
    pub write_errors: Counter,
}

impl FlowLogMetrics {
    /// Registers the counters as `chokepoint_flow_log_*_total`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("chokepoint_flow_log");
        r.register(
            "records_written",
            "Flow log lines written to the sink",
            self.records_written.clone(),
        );
        r.register(
            "flows_itemized",
            "Allowed flows counted in a flow record",
            self.flows_itemized.clone(),
        );
        r.register(
            "flows_unitemized",
            "Allowed flows counted only in a window's unitemized line (flows.maxKeys reached)",
            self.flows_unitemized.clone(),
        );
        r.register(
            "events_dropped",
            "Allowed flows not itemized because the flow log channel was full or closed",
            self.events_dropped.clone(),
        );
        r.register(
            "write_errors",
            "Flow log sink write or rotation errors",
            self.write_errors.clone(),
        );
    }
}
