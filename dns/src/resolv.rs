//! The default upstream: the first `nameserver` line of `/etc/resolv.conf`.

use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::path::Path;

use crate::Error;

/// Port used for a nameserver from resolv.conf (the file has no port syntax).
pub const DNS_PORT: u16 = 53;

/// The first usable `nameserver` of a resolv.conf text, with port 53.
///
/// Follows resolv.conf(5): keyword and value separated by blanks, `#` or `;` in the first
/// column starts a comment, later `nameserver` lines are fallbacks (ignored here: the proxy
/// has one canonical upstream). An IPv6 address may carry a zone (`fe80::1%eth0` or `%2`);
/// a zone that names no interface on this host makes that line unusable. Lines whose value is
/// not an IP address are skipped.
pub fn first_nameserver(text: &str) -> Option<SocketAddr> {
    text.lines().find_map(|line| {
        let line = line.trim_start();
        if line.starts_with('#') || line.starts_with(';') {
            return None;
        }
        let mut words = line.split_whitespace();
        if words.next()? != "nameserver" {
            return None;
        }
        parse_nameserver(words.next()?)
    })
}

fn parse_nameserver(value: &str) -> Option<SocketAddr> {
    match value.split_once('%') {
        None => value
            .parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, DNS_PORT)),
        Some((addr, zone)) => {
            let ip = addr.parse::<std::net::Ipv6Addr>().ok()?;
            let scope = match zone.parse::<u32>() {
                Ok(n) => n,
                Err(_) => nix::net::if_::if_nametoindex(zone).ok()?,
            };
            Some(SocketAddr::V6(SocketAddrV6::new(ip, DNS_PORT, 0, scope)))
        }
    }
}

/// Reads `path` and returns its [`first_nameserver`].
pub fn upstream_from_file(path: &Path) -> Result<SocketAddr, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::ResolvConf {
        path: path.to_path_buf(),
        source,
    })?;
    first_nameserver(&text).ok_or_else(|| Error::NoNameserver {
        path: path.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_usable_nameserver_wins() {
        let text = "# generated\n; comment\nsearch default.svc.cluster.local svc.cluster.local\n\
                    nameserver   not-an-ip\n\tnameserver 10.96.0.10\nnameserver 10.96.0.11\noptions ndots:5\n";
        assert_eq!(
            first_nameserver(text),
            Some("10.96.0.10:53".parse().unwrap())
        );
    }

    #[test]
    fn ipv6_with_and_without_zone() {
        assert_eq!(
            first_nameserver("nameserver fd00::a\n"),
            Some("[fd00::a]:53".parse().unwrap())
        );
        let Some(SocketAddr::V6(v6)) = first_nameserver("nameserver fe80::1%3\n") else {
            panic!("expected a v6 address");
        };
        assert_eq!(v6.scope_id(), 3);
        assert_eq!(v6.port(), 53);
        // An interface that does not exist makes the line unusable; the next one is taken.
        assert_eq!(
            first_nameserver("nameserver fe80::1%nosuchif0\nnameserver 192.0.2.1\n"),
            Some("192.0.2.1:53".parse().unwrap())
        );
    }

    #[test]
    fn nothing_usable() {
        assert_eq!(first_nameserver(""), None);
        assert_eq!(first_nameserver("#nameserver 10.0.0.1\nnameserver\n"), None);
        assert_eq!(first_nameserver("nameservers 10.0.0.1\n"), None);
    }

    #[test]
    fn file_errors_name_the_path() {
        let err = upstream_from_file(Path::new("/nonexistent/resolv.conf")).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/resolv.conf"),
            "{err}"
        );
        let dir = std::env::temp_dir().join(format!("ckp-dns-resolv-{}", std::process::id()));
        std::fs::write(&dir, "search x\n").unwrap();
        let err = upstream_from_file(&dir).unwrap_err();
        std::fs::remove_file(&dir).unwrap();
        assert!(matches!(err, Error::NoNameserver { .. }), "{err}");
    }
}
