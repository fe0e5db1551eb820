//! Caps on what pods hold at once (`limits:`): concurrent TCP connections and allowed UDP
//! flows, per source address and in total. A connection holds a [`Permit`] from accept to
//! close; a flow from its session's start to its end. A pod's addresses share its caps. Beyond a cap the connection is reset
//! (the flow's datagrams dropped) and audited (`connection_limit`, `flow_limit`), so one pod
//! cannot grow the gateway until it runs out of file descriptors and starve the others.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use chokepoint_config::settings::Limits;

use crate::policy::Snapshot;

/// Whose cap a connection from `src` counts against: the pod's first address, so that a
/// dual-stack pod's two addresses share one cap; a source that is no pod counts by itself.
pub fn holder(snapshot: &Snapshot, src: IpAddr) -> IpAddr {
    snapshot
        .pod_by_ip(src)
        .and_then(|pod| snapshot.pod(pod).ips.first().copied())
        .unwrap_or(src)
}

/// Which cap refused a connection or flow (the `scope` label of the refusals' metric).
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Exceeded {
    /// The source address holds its per-pod cap.
    Pod,
    /// The gateway holds its total.
    Total,
}

/// Counts what is held, per source address and in total.
#[derive(Debug)]
pub struct Limiter {
    per_pod: usize,
    total: usize,
    held: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    total: usize,
    /// Only sources holding something: at most `total` keys.
    by_source: HashMap<IpAddr, usize>,
}

/// One held connection or flow; dropping it gives the place back.
#[derive(Debug)]
pub struct Permit {
    limiter: Arc<Limiter>,
    src: IpAddr,
}

impl Limiter {
    pub fn new(per_pod: usize, total: usize) -> Arc<Limiter> {
        Arc::new(Limiter {
            per_pod,
            total,
            held: Mutex::default(),
        })
    }

    /// A place for one more connection or flow of `src`, or the cap it would exceed.
    pub fn acquire(self: &Arc<Self>, src: IpAddr) -> Result<Permit, Exceeded> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let of_source = held.by_source.get(&src).copied().unwrap_or(0);
        if of_source >= self.per_pod {
            return Err(Exceeded::Pod);
        }
        if held.total >= self.total {
            return Err(Exceeded::Total);
        }
        held.total += 1;
        held.by_source.insert(src, of_source + 1);
        Ok(Permit {
            limiter: self.clone(),
            src,
        })
    }

    /// A place for `src` whatever the caps say: for a flow that exists already (one a new
    /// gateway finds in conntrack), which refusing would not end.
    pub fn hold(self: &Arc<Self>, src: IpAddr) -> Permit {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.total += 1;
        *held.by_source.entry(src).or_insert(0) += 1;
        Permit {
            limiter: self.clone(),
            src,
        }
    }

    /// What `src` holds now.
    pub fn held_by(&self, src: IpAddr) -> usize {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .by_source
            .get(&src)
            .copied()
            .unwrap_or(0)
    }

    /// What is held now, in total.
    pub fn in_use(&self) -> usize {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .total
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut held = self
            .limiter
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        held.total = held.total.saturating_sub(1);
        if let Some(n) = held.by_source.get_mut(&self.src) {
            *n -= 1;
            if *n == 0 {
                held.by_source.remove(&self.src);
            }
        }
    }
}

/// The TCP and UDP limiters of one gateway.
#[derive(Debug)]
pub struct DataPathLimits {
    pub tcp: Arc<Limiter>,
    pub udp: Arc<Limiter>,
}

impl DataPathLimits {
    pub fn new(limits: &Limits) -> Self {
        DataPathLimits {
            tcp: Limiter::new(limits.tcp_connections_per_pod, limits.tcp_connections),
            udp: Limiter::new(limits.udp_flows_per_pod, limits.udp_flows),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_at_its_cap_is_refused_while_others_still_get_places_until_the_total() {
        let limiter = Limiter::new(2, 3);
        let a: IpAddr = "10.244.1.10".parse().unwrap();
        let b: IpAddr = "10.244.1.11".parse().unwrap();
        let c: IpAddr = "fd00::c".parse().unwrap();
        let a1 = limiter.acquire(a).unwrap();
        let a2 = limiter.acquire(a).unwrap();
        assert_eq!(limiter.acquire(a).unwrap_err(), Exceeded::Pod);
        let b1 = limiter.acquire(b).unwrap();
        assert_eq!(limiter.acquire(c).unwrap_err(), Exceeded::Total);
        assert_eq!(limiter.in_use(), 3);
        drop(a1);
        let again = limiter.acquire(a).unwrap();
        assert_eq!(limiter.acquire(a).unwrap_err(), Exceeded::Pod);
        drop((a2, again, b1));
        assert_eq!(limiter.in_use(), 0);
        let held = limiter.held.lock().unwrap();
        assert!(held.by_source.is_empty(), "{:?}", held.by_source);
    }
}
