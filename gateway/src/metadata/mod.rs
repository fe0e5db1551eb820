//! Metadata-server protection (docs/metadata.md).
//!
//! A connection to a metadata address (169.254.169.254, fd00:ec2::254 and any configured,
//! port 80) is decided by policy like every other; [`proxy::tcp`](crate::proxy::tcp) then
//! hands an allowed one to [`serve`] instead of relaying its bytes. There it is HTTP/1.x:
//! each request is checked (framing, path allowlist, kube2iam's role rules) and either
//! answered by the gateway (`403` with a one-line reason and an audit record, `400`/`413`/
//! `431` for malformed requests) or forwarded — to the kube2iam-like endpoint (`rewrite`,
//! with identity headers) or the real metadata service (`passthrough`) — from the pod's own
//! address, so an unmodified kube2iam that identifies pods by source IP keeps working.
//!
//! Every other flow to a metadata address — another TCP port, any UDP — is refused after
//! policy allowed it ([`Metadata::refuses`]), with the audit reason `metadata_port_refused`.
//!
//! Modules: [`config`] (the settings in the handler's form), [`paths`] (request-target
//! checks and the path allowlist), [`roles`] (the role annotation against the namespace's
//! allowed-roles globs), [`identity`] (the pod behind a source IP, the identity headers),
//! [`decide`] (one request's verdict, a value), [`handler`] (the hyper server side),
//! [`forward`] (the upstream exchange), [`metrics`] (`chokepoint_metadata_*`).

pub mod config;
pub mod decide;
pub mod forward;
pub mod handler;
pub mod identity;
pub mod metrics;
pub mod paths;
pub mod roles;

use std::net::SocketAddr;

use chokepoint_config::settings::MetadataSettings;

use crate::audit::Auditor;
use crate::state::PolicyState;
use crate::upstream::Connector;

pub use config::{METADATA_PORT, MetadataConfig};
pub use handler::serve;
pub use metrics::{MetadataMetrics, RequestResult};

/// What the handler uses of the gateway, lent by the data path for one connection.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The policy in force: every request is decided again against it.
    pub state: &'a PolicyState,
    pub auditor: &'a Auditor,
    pub metadata: &'a Metadata,
    /// How the upstream is reached (like the data path's own connections).
    pub upstream: &'a Connector,
}

/// The handler's configuration and metrics, shared by every connection.
#[derive(Debug)]
pub struct Metadata {
    pub config: MetadataConfig,
    pub metrics: MetadataMetrics,
}

impl Metadata {
    pub fn new(settings: &MetadataSettings) -> Metadata {
        Metadata {
            config: MetadataConfig::new(settings),
            metrics: MetadataMetrics::default(),
        }
    }

    /// Whether an allowed connection to `original` goes to [`serve`].
    pub fn intercepts(&self, original: SocketAddr) -> bool {
        self.config.is_metadata(original)
    }

    /// Whether an allowed flow to `original` must be refused: a metadata address on anything
    /// but TCP to [`METADATA_PORT`] (where [`serve`] decides each request). Such flows would
    /// otherwise be relayed raw, past the path and role checks.
    pub fn refuses(&self, original: SocketAddr, tcp: bool) -> bool {
        self.config.is_metadata_address(original.ip()) && !(tcp && self.intercepts(original))
    }

    /// Says at start-up what happens to metadata requests.
    pub fn log_start(&self, settings: &MetadataSettings) {
        let c = &self.config;
        if settings.denies_for_want_of_an_endpoint() {
            tracing::warn!(target: "metadata", "no `metadata.endpoint` set: requests to the metadata server that policy allows are answered 403 (set `metadata.endpoint`, or `metadata.mode: passthrough`)");
        } else {
            tracing::info!(target: "metadata", mode = ?c.mode, endpoint = ?c.endpoint, paths = settings.paths.len(), "metadata handler");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tcp_port_80_of_a_metadata_address_goes_to_the_handler_the_rest_is_refused() {
        let m = Metadata::new(&MetadataSettings::default());
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(!m.refuses(at("169.254.169.254:80"), true));
        assert!(m.intercepts(at("169.254.169.254:80")));
        for (addr, tcp) in [
            ("169.254.169.254:8080", true),
            ("169.254.169.254:80", false),
            ("[fd00:ec2::254]:53", false),
            ("[::ffff:169.254.169.254]:443", true),
        ] {
            assert!(m.refuses(at(addr), tcp), "{addr} tcp={tcp}");
        }
        assert!(!m.refuses(at("192.0.2.10:8080"), true));
        assert!(!m.refuses(at("192.0.2.10:80"), false));
    }
}
