//! What the capture rules do in the kernel, told to the operator: the start-up line that says
//! how each IP family is captured, and the packets the rules dropped as spoofed, as the
//! metric `chokepoint_capture_spoofed_packets_total` (read from the table's named counter at
//! each scrape: a kernel drop has no audit record of its own).

use chokepoint_redirect::{CaptureSpec, SPOOFED_LOG_PREFIX};
use ipnet::IpNet;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::registry::Registry;

/// Reads the spoofed-packets counter of the installed table on each scrape.
#[derive(Debug)]
struct SpoofedPackets;

impl Collector for SpoofedPackets {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // No table (not installed yet, or removed): no sample, rather than a false zero.
        let packets = match chokepoint_redirect::spoofed_packets() {
            Ok(Some(n)) => n,
            Ok(None) => return Ok(()),
            Err(e) => {
                tracing::debug!(target: "redirect", "reading the spoofed-packets counter: {e}");
                return Ok(());
            }
        };
        let counter = ConstCounter::new(packets);
        let metric = encoder.encode_descriptor(
            "chokepoint_capture_spoofed_packets",
            "Pod packets the capture dropped because their source failed the reverse-path check",
            None,
            counter.metric_type(),
        )?;
        counter.encode(metric)
    }
}

/// Registers `chokepoint_capture_spoofed_packets_total` (only when this gateway installs the
/// rules: otherwise the counter is someone else's to read).
pub fn register(registry: &mut Registry) {
    registry.register_collector(Box::new(SpoofedPackets));
}

/// One line per family at start-up: by which interfaces and ranges it is captured. A family
/// without either cannot be served (the spec is refused before this), so the line never
/// hides a hole; it also says how spoofed packets are reported.
pub fn log_start(spec: &CaptureSpec) {
    let families: &[(&str, bool, bool)] = &[
        ("IPv4", spec.families.v4(), true),
        ("IPv6", spec.families.v6(), false),
    ];
    for &(name, served, v4) in families {
        if !served {
            tracing::warn!(target: "redirect", family = name, "not served: dropped from pod interfaces");
            continue;
        }
        let ranges: Vec<String> = spec
            .pod_cidrs
            .iter()
            .filter(|n| matches!(n, IpNet::V4(_)) == v4)
            .map(ToString::to_string)
            .collect();
        tracing::info!(
            target: "redirect",
            family = name,
            interfaces = ?spec.pod_interfaces,
            ranges = ?ranges,
            "captured from pods; sources failing the reverse-path check are dropped (metric chokepoint_capture_spoofed_packets_total, kernel log prefix {SPOOFED_LOG_PREFIX:?})"
        );
    }
    if spec.pod_interfaces.is_empty() {
        tracing::warn!(target: "redirect", "capture.interfaces is empty: pod traffic is recognised by source range only, so a pod that forges a source outside capture.podCIDRs is not captured; set capture.interfaces");
    }
}
