//! The log of allowed flows (`flows:` settings, schema in `docs/flow-log.md`).
//!
//! - [`FlowLog`]: the data path's cheap, cloneable handle. [`FlowLog::record`] never blocks:
//!   it hands a compact [`FlowEvent`] (the snapshot it was decided with, the addresses, the
//!   names) to a bounded channel, and counts it as dropped when the channel is full.
//! - One aggregator task turns events into [`FlowRecord`]s: it resolves pods, Services and
//!   policies from the event's snapshot (off the data path), counts flows per key for one
//!   window, and writes one line per key when the window closes. At most `flows.maxKeys`
//!   keys are held; flows of further keys, and dropped events, are written as the window's
//!   [`Unitemized`] line, so that the counts of a window always add up to every flow.
//! - [`FlowLogMetrics`]: `chokepoint_flow_log_*` counters without labels.

mod aggregate;
mod log;
mod metrics;
mod record;

pub use log::{FlowEvent, FlowLog, FlowLogWriter};
pub use metrics::FlowLogMetrics;
pub use record::{
    FlowDestination, FlowLine, FlowRecord, FlowSource, Unitemized, UnitemizedCounts, parse_lines,
};
