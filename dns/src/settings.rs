//! [`DnsSettings`]: the `dns:` section of the gateway settings, owned (and validated, with
//! every error located) by `chokepoint-config`; this module adds what only the DNS proxy
//! needs of it.

use std::net::SocketAddr;
use std::path::Path;

pub use chokepoint_config::settings::Dns as DnsSettings;
pub use chokepoint_config::settings::defaults::dns as defaults;

use crate::Error;

/// The upstream to forward to: `settings.upstream` when set, else the first `nameserver` of
/// `/etc/resolv.conf`.
pub fn resolve_upstream(settings: &DnsSettings) -> Result<SocketAddr, Error> {
    match settings.upstream {
        Some(addr) => Ok(addr),
        None => crate::resolv::upstream_from_file(Path::new(defaults::RESOLV_CONF)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listen_port_is_the_one_the_capture_rules_use_by_default() {
        assert_eq!(
            DnsSettings::default().listen_port,
            chokepoint_redirect::DEFAULT_DNS_PORT
        );
    }

    #[test]
    fn an_explicit_upstream_wins_over_resolv_conf() {
        let s = DnsSettings {
            upstream: Some("192.0.2.53:53".parse().unwrap()),
            ..DnsSettings::default()
        };
        assert_eq!(
            resolve_upstream(&s).unwrap(),
            "192.0.2.53:53".parse().unwrap()
        );
    }
}
