//! The `metadata:` settings in the form the handler uses.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use chokepoint_config::settings::{MetadataMode, MetadataSettings, RoleSettings};

use super::paths::PathPolicy;

/// The port the metadata server is spoken to on; other ports of its addresses are plain
/// connections, decided and relayed like any other.
pub const METADATA_PORT: u16 = 80;

/// hyper's smallest read buffer.
const MIN_BUFFER: usize = 8192;

#[derive(Debug, Clone)]
pub struct MetadataConfig {
    pub mode: MetadataMode,
    pub endpoint: Option<SocketAddr>,
    /// Canonical (IPv4-mapped IPv6 written as IPv4).
    addresses: Vec<IpAddr>,
    pub paths: PathPolicy,
    pub roles: RoleSettings,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub header_read_timeout: Duration,
    pub upstream_timeout: Duration,
}

impl MetadataConfig {
    pub fn new(s: &MetadataSettings) -> MetadataConfig {
        MetadataConfig {
            mode: s.mode,
            endpoint: s.endpoint,
            addresses: s.addresses.iter().map(|a| a.to_canonical()).collect(),
            paths: PathPolicy::new(s),
            roles: s.roles.clone(),
            max_header_bytes: s.max_header_bytes,
            max_headers: s.max_headers,
            header_read_timeout: s.header_read_timeout,
            upstream_timeout: s.upstream_timeout,
        }
    }

    /// Whether a connection to `original` is one to the metadata server.
    pub fn is_metadata(&self, original: SocketAddr) -> bool {
        original.port() == METADATA_PORT && self.is_metadata_address(original.ip())
    }

    /// Whether `ip` is one of the metadata addresses (whatever the port).
    pub fn is_metadata_address(&self, ip: IpAddr) -> bool {
        self.addresses.contains(&ip.to_canonical())
    }

    /// hyper's read buffer: at least its minimum, and room for the largest allowed head.
    pub fn buffer_size(&self) -> usize {
        self.max_header_bytes.max(MIN_BUFFER)
    }

    /// Where `rewrite` and `passthrough` send a request that came for `original`.
    pub fn target(&self, original: SocketAddr) -> Option<SocketAddr> {
        match self.mode {
            MetadataMode::Rewrite => self.endpoint,
            MetadataMode::Passthrough => Some(original),
            MetadataMode::Deny => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_addresses_on_port_80_in_every_form() {
        let mut s = MetadataSettings::default();
        s.addresses.push("169.254.170.2".parse().unwrap());
        let c = MetadataConfig::new(&s);
        for yes in [
            "169.254.169.254:80",
            "[::ffff:169.254.169.254]:80",
            "[fd00:ec2::254]:80",
            "169.254.170.2:80",
        ] {
            assert!(c.is_metadata(yes.parse().unwrap()), "{yes}");
        }
        for no in [
            "169.254.169.254:8080",
            "169.254.169.253:80",
            "[fd00:ec2::253]:80",
        ] {
            assert!(!c.is_metadata(no.parse().unwrap()), "{no}");
        }
        assert!(c.is_metadata_address("::ffff:169.254.170.2".parse().unwrap()));
        assert!(!c.is_metadata_address("169.254.169.253".parse().unwrap()));
    }
}
