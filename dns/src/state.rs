//! The name cache across restarts: saved to a file now and then and on shutdown, loaded at
//! start. Without it a gateway restart (an upgrade, a crash) would make every name the pods
//! already resolved unknown until they look it up again — and applications that cache DNS
//! themselves may not do that for minutes: the most-cited FQDN outage of in-agent DNS proxies.
//!
//! The file is JSON: `{"version":1,"entries":[[namespace, name, ip, expires_unix_ms], …]}`,
//! written to a temporary file and renamed over the old one, so a crash mid-write leaves the
//! previous file. Expiry is stored as wall-clock time (the monotonic clock does not survive a
//! restart). Loading skips expired and malformed entries and caps every expiry at what a fresh
//! answer could give ([`Cache::restore`]); a file that cannot be read is reported and the cache
//! starts empty, as it would without one.

use std::fs;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::cache::Cache;

const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct File {
    version: u32,
    entries: Vec<(String, String, IpAddr, u64)>,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::State {
        path: path.to_owned(),
        source,
    }
}

/// Writes every live entry of `cache` to `path` (atomically); returns how many.
pub fn save(cache: &Cache, path: &Path) -> Result<usize, Error> {
    let (now, wall) = (Instant::now(), SystemTime::now());
    let entries: Vec<(String, String, IpAddr, u64)> = cache
        .entries(now)
        .into_iter()
        .map(|e| {
            let expires = wall + e.expires.saturating_duration_since(now);
            (
                e.namespace.to_string(),
                e.name.to_string(),
                e.ip,
                unix_ms(expires),
            )
        })
        .collect();
    let count = entries.len();
    let text = serde_json::to_vec(&File {
        version: VERSION,
        entries,
    })
    .map_err(|e| Error::StateFormat {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(io_error(path))?;
    }
    let tmp = temporary(path);
    let mut file = fs::File::create(&tmp).map_err(io_error(&tmp))?;
    file.write_all(&text).map_err(io_error(&tmp))?;
    file.sync_all().map_err(io_error(&tmp))?;
    fs::rename(&tmp, path).map_err(io_error(path))?;
    Ok(count)
}

fn temporary(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Puts the entries saved in `path` back into `cache`; returns how many. A missing file is
/// no error (nothing was saved yet).
pub fn load(cache: &Cache, path: &Path) -> Result<usize, Error> {
    let text = match fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_error(path)(e)),
    };
    let file: File = serde_json::from_slice(&text).map_err(|e| Error::StateFormat {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    if file.version != VERSION {
        return Err(Error::StateFormat {
            path: path.to_owned(),
            message: format!("version {} (this build reads {VERSION})", file.version),
        });
    }
    let (now, wall) = (Instant::now(), unix_ms(SystemTime::now()));
    let mut restored = 0;
    for (namespace, name, ip, expires_ms) in file.entries {
        let Some(left) = expires_ms.checked_sub(wall).filter(|ms| *ms > 0) else {
            continue;
        };
        if namespace.is_empty() || name.is_empty() {
            continue;
        }
        let expires = now.checked_add(Duration::from_millis(left)).unwrap_or(now);
        cache.restore(&namespace, &name, ip, expires, now);
        restored += 1;
    }
    Ok(restored)
}

/// Saves `cache` to `path` every `every`, off the async workers, until aborted (spawn it;
/// on shutdown abort it and [`save`] once more). A failing save is logged when it starts
/// failing and when it works again, not every time.
pub async fn save_periodically(cache: Arc<Cache>, path: PathBuf, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut failing = false;
    loop {
        tick.tick().await;
        let (c, p) = (cache.clone(), path.clone());
        let result = tokio::task::spawn_blocking(move || save(&c, &p)).await;
        match result {
            Ok(Ok(_)) if failing => {
                failing = false;
                tracing::info!(target: "dns", path = %path.display(), "saving the name cache works again");
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) if !failing => {
                failing = true;
                tracing::warn!(target: "dns", "cannot save the name cache (a restart will forget it): {e}");
            }
            Ok(Err(_)) => {}
            Err(e) => tracing::warn!(target: "dns", "the name cache saver failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::CacheLimits;
    use crate::metrics::Metrics;

    fn dir(tag: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("chokepoint-dns-state-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn cache() -> Cache {
        Cache::new(CacheLimits::default(), &Metrics::default())
    }

    #[test]
    fn saved_entries_come_back_with_their_expiry() {
        let d = dir("roundtrip");
        let path = d.join("sub/names.json");
        let now = Instant::now();
        let a = cache();
        a.insert(
            "shop",
            "API.Stripe.com.",
            &["192.0.2.1".parse().unwrap()],
            600,
            now,
        );
        a.insert(
            "shop",
            "cdn.example",
            &["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()],
            60,
            now,
        );
        a.insert(
            "dev",
            "api.stripe.com",
            &["192.0.2.9".parse().unwrap()],
            60,
            now,
        );
        assert_eq!(save(&a, &path).unwrap(), 4);
        assert!(
            !temporary(&path).exists(),
            "the temporary file is renamed away"
        );

        let b = cache();
        assert_eq!(load(&b, &path).unwrap(), 4);
        let later = Instant::now();
        let ip = "192.0.2.1".parse().unwrap();
        assert_eq!(b.names_for("shop", ip, later).len(), 2);
        assert!(b.resolved("shop", "api.stripe.com", ip, later));
        assert!(
            !b.resolved("dev", "api.stripe.com", ip, later),
            "per namespace"
        );
        let kept = b.expiry("shop", "api.stripe.com", ip).unwrap();
        let original = a.expiry("shop", "api.stripe.com", ip).unwrap();
        let drift = if kept > original {
            kept - original
        } else {
            original - kept
        };
        assert!(drift < Duration::from_secs(2), "{drift:?}");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn expired_malformed_and_overlong_entries_are_not_restored() {
        let d = dir("filter");
        fs::create_dir_all(&d).unwrap();
        let path = d.join("names.json");
        let wall = unix_ms(SystemTime::now());
        let ten_years = wall + 10 * 365 * 24 * 3600 * 1000;
        fs::write(
            &path,
            format!(
                r#"{{"version":1,"entries":[["shop","old.example","192.0.2.1",{past}],["","x.example","192.0.2.1",{ten_years}],["shop","long.example","192.0.2.2",{ten_years}]]}}"#,
                past = wall - 1000
            ),
        )
        .unwrap();
        let c = cache();
        assert_eq!(load(&c, &path).unwrap(), 1);
        let ip = "192.0.2.2".parse().unwrap();
        let limits = CacheLimits::default();
        let at = c.expiry("shop", "long.example", ip).unwrap();
        assert!(
            at <= Instant::now() + limits.max_ttl + limits.grace,
            "capped by the settings"
        );

        fs::write(&path, "not json").unwrap();
        assert!(matches!(load(&c, &path), Err(Error::StateFormat { .. })));
        fs::write(&path, r#"{"version":9,"entries":[]}"#).unwrap();
        let err = load(&c, &path).unwrap_err().to_string();
        assert!(err.contains("version 9"), "{err}");
        assert_eq!(load(&c, &d.join("missing.json")).unwrap(), 0);
        fs::remove_dir_all(&d).unwrap();
    }
}
