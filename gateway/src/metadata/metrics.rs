//! `chokepoint_metadata_*` metrics. The only label is the request's result, a bounded enum
//! (never an IP, a path or a pod name: those belong in the audit log).

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// What became of one request to the metadata server.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum RequestResult {
    /// Forwarded upstream and answered (whatever the upstream's status).
    Forwarded,
    /// `403`: the path (or method) is not allowed.
    PathDenied,
    /// `403`: a credentials request for a role the pod may not have.
    RoleDenied,
    /// `403`: `metadata.mode` is `deny`.
    Disabled,
    /// `400`, `413`, `431`: malformed, smuggling-shaped or oversized (hyper's own refusals
    /// included).
    BadRequest,
    /// `502`/`504`: the upstream could not be reached or did not answer in time.
    UpstreamError,
    /// The connection was reset: policy (after a reload) no longer allows it.
    PolicyDenied,
    /// The connection was reset: another pod owns the source IP now.
    IdentityChanged,
}

const RESULTS: [RequestResult; 8] = [
    RequestResult::Forwarded,
    RequestResult::PathDenied,
    RequestResult::RoleDenied,
    RequestResult::Disabled,
    RequestResult::BadRequest,
    RequestResult::UpstreamError,
    RequestResult::PolicyDenied,
    RequestResult::IdentityChanged,
];

impl RequestResult {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestResult::Forwarded => "forwarded",
            RequestResult::PathDenied => "path_denied",
            RequestResult::RoleDenied => "role_denied",
            RequestResult::Disabled => "disabled",
            RequestResult::BadRequest => "bad_request",
            RequestResult::UpstreamError => "upstream_error",
            RequestResult::PolicyDenied => "policy_denied",
            RequestResult::IdentityChanged => "identity_changed",
        }
    }
}

impl EncodeLabelValue for RequestResult {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        self.as_str().encode(encoder)
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    result: RequestResult,
}

/// Cheap to clone; every series exists from the start (counting takes no lock).
#[derive(Debug, Clone)]
pub struct MetadataMetrics {
    requests: Family<RequestLabels, Counter>,
    /// In `RESULTS` order.
    series: Vec<Counter>,
    /// Connections closed because a request head did not arrive in time (slow clients, and
    /// keep-alive connections left idle past the header timeout).
    pub client_timeouts: Counter,
}

impl Default for MetadataMetrics {
    fn default() -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        let series = RESULTS
            .iter()
            .map(|&result| requests.get_or_create(&RequestLabels { result }).clone())
            .collect();
        MetadataMetrics {
            requests,
            series,
            client_timeouts: Counter::default(),
        }
    }
}

impl MetadataMetrics {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("chokepoint");
        r.register(
            "metadata_requests",
            "Requests to the metadata server, by result",
            self.requests.clone(),
        );
        r.register(
            "metadata_client_timeouts",
            "Metadata connections closed because no complete request head arrived in time",
            self.client_timeouts.clone(),
        );
    }

    pub fn count(&self, result: RequestResult) {
        let i = RESULTS.iter().position(|r| *r == result).unwrap_or(0);
        self.series[i].inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_render_in_snake_case_and_exist_from_the_start() {
        let m = MetadataMetrics::default();
        let mut registry = Registry::default();
        m.register(&mut registry);
        m.count(RequestResult::UpstreamError);
        m.count(RequestResult::UpstreamError);
        let text = crate::metrics::render(&registry);
        assert!(
            text.contains(r#"chokepoint_metadata_requests_total{result="upstream_error"} 2"#),
            "{text}"
        );
        for r in RESULTS {
            assert!(
                text.contains(&format!(r#"{{result="{}"}}"#, r.as_str())),
                "{text}"
            );
        }
        assert!(
            text.contains("chokepoint_metadata_client_timeouts_total 0"),
            "{text}"
        );
    }
}
