//! The observation cache: which IPs each namespace's pods have been told a name resolves to,
//! and until when.
//!
//! An entry is one `(source namespace, name, IP)` observation with an expiry instant:
//! `now + clamp(ttl, min_ttl, max_ttl) + grace`. A later answer for the same triple only ever
//! extends it (a TTL refresh resets the timer, NPEP-133). Names are lower-case without the
//! trailing dot ([`normalize_text`]); IPv4-mapped IPv6 addresses are stored as IPv4.
//!
//! One file of about 1,000 lines, 420 of them tests: the shards, their expiry heaps and the
//! eviction are one data structure and its invariants.
//!
//! # Structure, and why
//!
//! Reads happen on every new connection (the gateway's hot path, many tasks at once); writes
//! happen once per DNS answer, i.e. often (thousands per second on a busy node). Copy-on-write
//! of an immutable map (arc-swap) would copy the whole cache on every answer, so it is not used.
//! Instead the cache is split into a power-of-two number of shards, each a
//! `std::sync::RwLock` around `namespace → IP → [(name, expiry)]`. The shard is chosen by
//! hashing `(namespace, IP)`, so both lookups the gateway needs —
//! [`names_for`](Cache::names_for) and [`resolved`](Cache::resolved) — touch exactly one
//! shard, take only its read lock, do two hash lookups and a scan of the (short, capped at
//! [`MAX_NAMES_PER_IP`]) name list, and never hold the lock across an `.await` (nothing in here
//! is async). A writer holds one shard's write lock for the few inserts of one IP.
//!
//! Memory is bounded by [`CacheLimits::max_entries`], split evenly over the shards. Each shard
//! keeps a min-heap of expiries (lazy: a refreshed or removed entry leaves a stale heap item
//! that is skipped when popped, and the heap is rebuilt when stale items dominate). Expired
//! entries go first, on every write to their shard and on [`Cache::purge`].
//!
//! # Fair shares between namespaces
//!
//! Pods of one namespace decide what enters the cache (any name can be looked up), so one
//! namespace must not be able to push another's live entries out: tenant-b looking up a
//! hundred thousand names would otherwise make tenant-a's next connection unknown. Two rules,
//! both applied per shard (a namespace's entries spread evenly over the shards, since the
//! shard is chosen by hashing `(namespace, IP)`):
//! - **Quota**: a namespace holds at most [`CacheLimits::max_entries_per_namespace`] entries;
//!   at its quota a new entry evicts *that namespace's own* entry closest to expiry
//!   (`reason="namespace_quota"`).
//! - **Full cache**: when the shard is full anyway (many namespaces near their quota), the
//!   entry closest to expiry of the namespace holding **the most** entries in the shard is
//!   evicted (`reason="cache_full"`; ties go against the namespace inserting). A namespace
//!   that holds no more than any other never loses a live entry to another's lookups.
//!
//! Both evictions scan one namespace's entries in one shard (bounded by the shard's capacity);
//! they only happen in a cache that is full, and then cost the namespace that fills it.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use crate::answer::{Observation, normalize_text};
use crate::metrics::{EvictionReason, Metrics};
use crate::settings::DnsSettings;

/// Most names remembered for one `(namespace, IP)`; beyond it the name closest to expiry is
/// evicted. Keeps both lookups cheap even when a namespace points thousands of names (say, a
/// wildcard zone) at one address.
pub const MAX_NAMES_PER_IP: usize = 1024;

/// Shards are sized for about this many entries each (and there are at most [`MAX_SHARDS`]).
const ENTRIES_PER_SHARD: usize = 4096;
const MAX_SHARDS: usize = 64;
/// The longest an observation is kept, whatever the settings say.
const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// TTL clamping, grace and size of a [`Cache`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLimits {
    pub min_ttl: Duration,
    pub max_ttl: Duration,
    pub grace: Duration,
    pub max_entries: usize,
    /// Most entries one namespace holds (see [fair shares](self#fair-shares-between-namespaces)).
    pub max_entries_per_namespace: usize,
}

impl CacheLimits {
    /// The limits of [`DnsSettings`].
    pub fn from_settings(settings: &DnsSettings) -> Self {
        CacheLimits {
            min_ttl: settings.min_ttl,
            max_ttl: settings.max_ttl,
            grace: settings.grace,
            max_entries: settings.max_entries,
            max_entries_per_namespace: settings.max_entries_per_namespace.min(settings.max_entries),
        }
    }

    /// When an observation with this TTL (seconds), made at `now`, stops counting.
    pub fn expiry(&self, ttl: u32, now: Instant) -> Instant {
        let ttl =
            Duration::from_secs(u64::from(ttl)).clamp(self.min_ttl, self.max_ttl.max(self.min_ttl));
        // Absurd settings (centuries) must not overflow the clock: saturate at ~100 years.
        let keep = ttl.saturating_add(self.grace).min(FOREVER);
        now.checked_add(keep).unwrap_or(now)
    }
}

#[cfg(test)]
impl Default for CacheLimits {
    fn default() -> Self {
        CacheLimits::from_settings(&DnsSettings::default())
    }
}

/// The per-namespace name ↔ IP observation cache; see the [module docs](self). Share it as
/// `Arc<Cache>`; every method takes `&self`.
pub struct Cache {
    shards: Box<[RwLock<Shard>]>,
    hasher: RandomState,
    limits: CacheLimits,
    capacity: Capacity,
    metrics: Metrics,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("shards", &self.shards.len())
            .field("limits", &self.limits)
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

type Names = Vec<(Arc<str>, Instant)>;

/// One observation: pods of `namespace` resolved `name` to `ip`, counting until `expires`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
    pub ip: IpAddr,
    pub expires: Instant,
}

#[derive(Default)]
struct Shard {
    by_namespace: HashMap<Arc<str>, Tenant>,
    len: usize,
    expiries: BinaryHeap<Reverse<Expiry>>,
}

/// One namespace's entries in one shard.
#[derive(Default)]
struct Tenant {
    ips: HashMap<IpAddr, Names>,
    len: usize,
}

impl Tenant {
    /// The entry closest to expiry.
    fn closest_to_expiry(&self) -> Option<(IpAddr, Arc<str>)> {
        self.ips
            .iter()
            .flat_map(|(ip, names)| names.iter().map(move |(name, at)| (*at, *ip, name)))
            .min_by_key(|(at, _, _)| *at)
            .map(|(_, ip, name)| (ip, name.clone()))
    }
}

/// A heap item; ordered by `at` only.
struct Expiry {
    at: Instant,
    namespace: Arc<str>,
    ip: IpAddr,
    name: Arc<str>,
}

impl PartialEq for Expiry {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}
impl Eq for Expiry {}
impl PartialOrd for Expiry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Expiry {
    fn cmp(&self, other: &Self) -> Ordering {
        self.at.cmp(&other.at)
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Changes {
    added: usize,
    expired: usize,
    /// Evictions by `EvictionReason`: namespace quota, cache full, names per IP.
    quota: usize,
    full: usize,
    per_ip: usize,
}

impl Changes {
    fn evicted(&self) -> usize {
        self.quota + self.full + self.per_ip
    }
}

/// Per-shard capacities: the whole shard, and one namespace within it.
#[derive(Debug, Clone, Copy)]
struct Capacity {
    shard: usize,
    namespace: usize,
}

impl Shard {
    fn names(&self, namespace: &str, ip: IpAddr) -> Option<&Names> {
        self.by_namespace.get(namespace)?.ips.get(&ip)
    }

    fn current_expiry(&self, namespace: &str, ip: IpAddr, name: &str) -> Option<Instant> {
        self.names(namespace, ip)?
            .iter()
            .find(|(n, _)| **n == *name)
            .map(|(_, at)| *at)
    }

    /// Removes one entry; true when it was there.
    fn remove(&mut self, namespace: &str, ip: IpAddr, name: &str) -> bool {
        let Some(tenant) = self.by_namespace.get_mut(namespace) else {
            return false;
        };
        let Some(names) = tenant.ips.get_mut(&ip) else {
            return false;
        };
        let Some(i) = names.iter().position(|(n, _)| **n == *name) else {
            return false;
        };
        names.swap_remove(i);
        if names.is_empty() {
            tenant.ips.remove(&ip);
        }
        tenant.len -= 1;
        if tenant.len == 0 {
            self.by_namespace.remove(namespace);
        }
        self.len -= 1;
        true
    }

    /// Whether a heap item still describes a live entry (not refreshed, not removed).
    fn is_current(&self, item: &Expiry) -> bool {
        self.current_expiry(&item.namespace, item.ip, &item.name) == Some(item.at)
    }

    /// Drops every entry that expired at or before `now`.
    fn pop_expired(&mut self, now: Instant) -> usize {
        let mut expired = 0;
        while let Some(Reverse(top)) = self.expiries.peek() {
            if top.at > now {
                break;
            }
            let Some(Reverse(item)) = self.expiries.pop() else {
                break;
            };
            if self.is_current(&item) && self.remove(&item.namespace, item.ip, &item.name) {
                expired += 1;
            }
        }
        expired
    }

    /// Evicts `namespace`'s entry closest to expiry; false when it holds none here.
    fn evict_from(&mut self, namespace: &str) -> bool {
        let Some((ip, name)) = self
            .by_namespace
            .get(namespace)
            .and_then(Tenant::closest_to_expiry)
        else {
            return false;
        };
        // Its heap item goes stale, skipped when popped.
        self.remove(namespace, ip, &name)
    }

    /// The namespace holding the most entries here; `inserting` wins a tie.
    fn largest(&self, inserting: &str) -> Option<Arc<str>> {
        let own = self.by_namespace.get(inserting).map_or(0, |t| t.len);
        let (name, tenant) = self.by_namespace.iter().max_by_key(|(_, t)| t.len)?;
        if own > 0 && own >= tenant.len {
            return self
                .by_namespace
                .get_key_value(inserting)
                .map(|(k, _)| k.clone());
        }
        Some(name.clone())
    }

    fn push_expiry(&mut self, namespace: &Arc<str>, ip: IpAddr, name: &Arc<str>, at: Instant) {
        self.expiries.push(Reverse(Expiry {
            at,
            namespace: namespace.clone(),
            ip,
            name: name.clone(),
        }));
    }

    /// Inserts or extends one entry.
    fn upsert(
        &mut self,
        namespace: &Arc<str>,
        ip: IpAddr,
        name: &Arc<str>,
        at: Instant,
        capacity: Capacity,
        changes: &mut Changes,
    ) {
        let refreshed = match self
            .by_namespace
            .get_mut(&**namespace)
            .and_then(|tenant| tenant.ips.get_mut(&ip))
            .and_then(|names| names.iter_mut().find(|(n, _)| **n == **name))
        {
            Some((_, current)) => {
                if at > *current {
                    *current = at;
                    Some(true)
                } else {
                    Some(false)
                }
            }
            None => None,
        };
        match refreshed {
            Some(true) => {
                self.push_expiry(namespace, ip, name, at);
                self.compact_heap();
                return;
            }
            Some(false) => return,
            None => {}
        }
        // A new entry: make room first.
        if let Some(names) = self.names(namespace, ip)
            && names.len() >= MAX_NAMES_PER_IP
            && let Some((oldest, _)) = names.iter().min_by_key(|(_, at)| *at).cloned()
            && self.remove(namespace, ip, &oldest)
        {
            changes.per_ip += 1;
        }
        while self
            .by_namespace
            .get(&**namespace)
            .is_some_and(|t| t.len >= capacity.namespace)
            && self.evict_from(namespace)
        {
            changes.quota += 1;
        }
        while self.len >= capacity.shard {
            let Some(largest) = self.largest(namespace) else {
                break;
            };
            if !self.evict_from(&largest) {
                break;
            }
            changes.full += 1;
        }
        let tenant = self.by_namespace.entry(namespace.clone()).or_default();
        tenant.ips.entry(ip).or_default().push((name.clone(), at));
        tenant.len += 1;
        self.len += 1;
        changes.added += 1;
        self.push_expiry(namespace, ip, name, at);
        self.compact_heap();
    }

    /// Rebuilds the heap from the live entries when stale items make up most of it.
    fn compact_heap(&mut self) {
        if self.expiries.len() <= 2 * self.len + 64 {
            return;
        }
        let mut items = Vec::with_capacity(self.len);
        for (namespace, tenant) in &self.by_namespace {
            for (ip, names) in &tenant.ips {
                for (name, at) in names {
                    items.push(Reverse(Expiry {
                        at: *at,
                        namespace: namespace.clone(),
                        ip: *ip,
                        name: name.clone(),
                    }));
                }
            }
        }
        self.expiries = BinaryHeap::from(items);
    }
}

impl Cache {
    /// An empty cache with these limits; `metrics` receives the entry gauge and the eviction
    /// and expiry counters.
    pub fn new(limits: CacheLimits, metrics: &Metrics) -> Self {
        let max_entries = limits.max_entries.max(1);
        let shards = max_entries
            .div_ceil(ENTRIES_PER_SHARD)
            .next_power_of_two()
            .min(MAX_SHARDS);
        Cache {
            shards: (0..shards).map(|_| RwLock::default()).collect(),
            hasher: RandomState::new(),
            limits,
            capacity: Capacity {
                shard: max_entries.div_ceil(shards),
                namespace: limits
                    .max_entries_per_namespace
                    .clamp(1, max_entries)
                    .div_ceil(shards),
            },
            metrics: metrics.clone(),
        }
    }

    /// The limits this cache was made with.
    pub fn limits(&self) -> &CacheLimits {
        &self.limits
    }

    fn shard_index(&self, namespace: &str, ip: IpAddr) -> usize {
        // The shard count is a power of two.
        (self.hasher.hash_one((namespace, ip)) as usize) & (self.shards.len() - 1)
    }

    fn read(&self, namespace: &str, ip: IpAddr) -> RwLockReadGuard<'_, Shard> {
        self.shards[self.shard_index(namespace, ip)]
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write_shard(&self, index: usize) -> RwLockWriteGuard<'_, Shard> {
        self.shards[index]
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn account(&self, changes: Changes) {
        let delta = changes.added as i64 - changes.expired as i64 - changes.evicted() as i64;
        if delta > 0 {
            self.metrics.cache_entries.inc_by(delta);
        } else if delta < 0 {
            self.metrics.cache_entries.dec_by(-delta);
        }
        self.metrics
            .evicted(EvictionReason::NamespaceQuota, changes.quota);
        self.metrics
            .evicted(EvictionReason::CacheFull, changes.full);
        self.metrics
            .evicted(EvictionReason::NamesPerIp, changes.per_ip);
        if changes.expired > 0 {
            self.metrics.cache_expired.inc_by(changes.expired as u64);
        }
    }

    /// Records what a response taught a pod of `namespace`: its name resolves to each of its
    /// IPs until [`CacheLimits::expiry`] of its TTL.
    pub fn record(&self, namespace: &Arc<str>, observation: &Observation, now: Instant) {
        if observation.is_empty() {
            return;
        }
        let at = self.limits.expiry(observation.ttl, now);
        let mut changes = Changes::default();
        for ip in &observation.ips {
            let ip = ip.to_canonical();
            let mut shard = self.write_shard(self.shard_index(namespace, ip));
            changes.expired += shard.pop_expired(now);
            shard.upsert(
                namespace,
                ip,
                &observation.name,
                at,
                self.capacity,
                &mut changes,
            );
        }
        self.account(changes);
    }

    /// Records one name → IPs observation given as text (tests, tools). The name is
    /// normalized like [`normalize_text`].
    pub fn insert(&self, namespace: &str, name: &str, ips: &[IpAddr], ttl: u32, now: Instant) {
        let observation = Observation {
            name: Arc::from(&*normalize_text(name)),
            ips: ips.to_vec(),
            ttl,
        };
        self.record(&Arc::from(namespace), &observation, now);
    }

    /// Every name that pods of `namespace` resolved to `ip` and that has not expired at
    /// `now`, sorted.
    pub fn names_for(&self, namespace: &str, ip: IpAddr, now: Instant) -> Vec<Arc<str>> {
        let ip = ip.to_canonical();
        let mut names: Vec<Arc<str>> = {
            let shard = self.read(namespace, ip);
            match shard.names(namespace, ip) {
                Some(names) => names
                    .iter()
                    .filter(|(_, at)| *at > now)
                    .map(|(name, _)| name.clone())
                    .collect(),
                None => Vec::new(),
            }
        };
        names.sort_unstable();
        names
    }

    /// Whether pods of `namespace` resolved `name` (any case, one trailing dot allowed) to
    /// `ip` and that has not expired at `now`.
    pub fn resolved(&self, namespace: &str, name: &str, ip: IpAddr, now: Instant) -> bool {
        self.expiry(namespace, name, ip).is_some_and(|at| at > now)
    }

    /// When the observation `(namespace, name, ip)` stops counting, if the cache holds it
    /// (it may already be in the past when not purged yet).
    pub fn expiry(&self, namespace: &str, name: &str, ip: IpAddr) -> Option<Instant> {
        let name = normalize_text(name);
        let ip = ip.to_canonical();
        self.read(namespace, ip)
            .current_expiry(namespace, ip, &name)
    }

    /// Every live entry at `now` (for saving the cache, see [`crate::state`]); each shard is
    /// read-locked in turn, never two at once.
    pub fn entries(&self, now: Instant) -> Vec<Entry> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.read().unwrap_or_else(PoisonError::into_inner);
            for (namespace, tenant) in &shard.by_namespace {
                for (ip, names) in &tenant.ips {
                    for (name, at) in names.iter().filter(|(_, at)| *at > now) {
                        out.push(Entry {
                            namespace: namespace.clone(),
                            name: name.clone(),
                            ip: *ip,
                            expires: *at,
                        });
                    }
                }
            }
        }
        out
    }

    /// Puts back an entry saved earlier (see [`crate::state`]): `name` (normalized here)
    /// resolves to `ip` for pods of `namespace` until `expires`, which is capped at what a
    /// fresh answer could give (`maxTtl` + `grace` from `now`), so a saved file can never make
    /// a name last longer than the settings allow.
    pub fn restore(&self, namespace: &str, name: &str, ip: IpAddr, expires: Instant, now: Instant) {
        let latest = self.limits.expiry(u32::MAX, now);
        let at = expires.min(latest);
        if at <= now {
            return;
        }
        let ip = ip.to_canonical();
        let namespace: Arc<str> = Arc::from(namespace);
        let name: Arc<str> = Arc::from(&*normalize_text(name));
        let mut changes = Changes::default();
        let mut shard = self.write_shard(self.shard_index(&namespace, ip));
        shard.upsert(&namespace, ip, &name, at, self.capacity, &mut changes);
        drop(shard);
        self.account(changes);
    }

    /// Drops every entry expired at `now`; returns how many. Call it now and then (say every
    /// 10 s) so that memory follows expiry even for shards nobody writes to.
    pub fn purge(&self, now: Instant) -> usize {
        let mut changes = Changes::default();
        for index in 0..self.shards.len() {
            changes.expired += self.write_shard(index).pop_expired(now);
        }
        self.account(changes);
        changes.expired
    }

    /// Runs [`purge`](Self::purge) every `every`, forever (spawn it, abort it on shutdown).
    pub async fn purge_periodically(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.purge(Instant::now());
        }
    }

    /// Observations held (expired ones not yet purged included).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(PoisonError::into_inner).len)
            .sum()
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn limits(min: u64, max: u64, grace: u64, max_entries: usize) -> CacheLimits {
        CacheLimits {
            min_ttl: Duration::from_secs(min),
            max_ttl: Duration::from_secs(max),
            grace: Duration::from_secs(grace),
            max_entries,
            max_entries_per_namespace: max_entries,
        }
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn expiry_is_clamped_ttl_plus_grace() {
        let m = Metrics::default();
        let cache = Cache::new(limits(10, 100, 5, 1000), &m);
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        cache.insert("ns", "low.example", &[a], 1, t0);
        cache.insert("ns", "mid.example", &[a], 50, t0);
        cache.insert("ns", "high.example", &[a], 100_000, t0);
        assert_eq!(cache.expiry("ns", "low.example", a), Some(t0 + secs(15)));
        assert_eq!(cache.expiry("ns", "mid.example", a), Some(t0 + secs(55)));
        assert_eq!(cache.expiry("ns", "high.example", a), Some(t0 + secs(105)));

        // Inside the TTL, inside the grace, after both.
        assert!(cache.resolved("ns", "mid.example", a, t0 + secs(49)));
        assert!(cache.resolved("ns", "mid.example", a, t0 + secs(54)));
        assert!(!cache.resolved("ns", "mid.example", a, t0 + secs(55)));
        assert_eq!(
            cache.names_for("ns", a, t0 + secs(20)),
            [Arc::from("high.example"), Arc::from("mid.example")]
        );
        assert!(cache.names_for("ns", a, t0 + secs(200)).is_empty());
    }

    #[test]
    fn absurd_limits_do_not_overflow() {
        let l = CacheLimits {
            min_ttl: Duration::MAX,
            max_ttl: Duration::MAX,
            grace: Duration::MAX,
            max_entries: 10,
            max_entries_per_namespace: 10,
        };
        let t0 = Instant::now();
        assert!(l.expiry(u32::MAX, t0) > t0 + secs(365 * 24 * 3600));
    }

    #[test]
    fn refresh_extends_and_never_shortens() {
        let cache = Cache::new(limits(0, 3600, 0, 1000), &Metrics::default());
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        cache.insert("ns", "x.example", &[a], 60, t0);
        cache.insert("ns", "x.example", &[a], 60, t0 + secs(50));
        assert_eq!(cache.expiry("ns", "x.example", a), Some(t0 + secs(110)));
        cache.insert("ns", "x.example", &[a], 1, t0 + secs(51));
        assert_eq!(cache.expiry("ns", "x.example", a), Some(t0 + secs(110)));
        assert_eq!(cache.len(), 1);
        // The stale heap item of the first insert does not expire the refreshed entry.
        assert_eq!(cache.purge(t0 + secs(70)), 0);
        assert!(cache.resolved("ns", "x.example", a, t0 + secs(100)));
        assert_eq!(cache.purge(t0 + secs(110)), 1);
        assert!(cache.is_empty());
    }

    #[test]
    fn namespaces_are_isolated() {
        let cache = Cache::new(limits(0, 3600, 0, 1000), &Metrics::default());
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        cache.insert("team-a", "api.example", &[a], 60, t0);
        assert!(cache.resolved("team-a", "api.example", a, t0));
        assert!(!cache.resolved("team-b", "api.example", a, t0));
        assert!(cache.names_for("team-b", a, t0).is_empty());
        assert!(!cache.resolved("team-a", "api.example", ip("192.0.2.2"), t0));
    }

    #[test]
    fn names_are_case_insensitive_and_ips_canonical() {
        let cache = Cache::new(limits(0, 3600, 0, 1000), &Metrics::default());
        let t0 = Instant::now();
        cache.insert("ns", "API.Example.COM.", &[ip("::ffff:192.0.2.1")], 60, t0);
        assert!(cache.resolved("ns", "api.example.com", ip("192.0.2.1"), t0));
        assert!(cache.resolved("ns", "Api.Example.Com.", ip("::ffff:192.0.2.1"), t0));
        assert_eq!(
            cache.names_for("ns", ip("192.0.2.1"), t0),
            [Arc::from("api.example.com")]
        );
    }

    #[test]
    fn a_cname_chain_is_learned_for_the_question_only() {
        use crate::answer::tests::{a, cname, response};
        use hickory_proto::rr::RecordType;
        let m = response(
            "www.shop.example.",
            RecordType::A,
            vec![
                cname("www.shop.example.", 300, "shop.cdn.example."),
                a("shop.cdn.example.", 30, "198.51.100.1"),
                a("shop.cdn.example.", 30, "198.51.100.2"),
            ],
        );
        let cache = Cache::new(limits(0, 3600, 0, 1000), &Metrics::default());
        let t0 = Instant::now();
        cache.record(&Arc::from("ns"), &crate::answer::observe(&m), t0);
        for addr in ["198.51.100.1", "198.51.100.2"] {
            assert_eq!(
                cache.names_for("ns", ip(addr), t0),
                [Arc::from("www.shop.example")]
            );
            assert!(cache.resolved("ns", "www.shop.example", ip(addr), t0 + secs(29)));
            // The chain's TTL is its minimum (30), not the CNAME's 300.
            assert!(!cache.resolved("ns", "www.shop.example", ip(addr), t0 + secs(30)));
        }
    }

    #[test]
    fn at_least_100_ips_per_name() {
        let cache = Cache::new(limits(0, 3600, 0, 1000), &Metrics::default());
        let t0 = Instant::now();
        let ips: Vec<IpAddr> = (0..150u32)
            .map(|i| IpAddr::from(std::net::Ipv4Addr::from(0xCB00_7100 + i)))
            .collect();
        cache.insert("ns", "many.example", &ips, 60, t0);
        assert!(
            ips.iter()
                .all(|a| cache.resolved("ns", "many.example", *a, t0))
        );
        assert_eq!(cache.len(), 150);
    }

    #[test]
    fn eviction_removes_the_entry_closest_to_expiry_and_is_counted() {
        let m = Metrics::default();
        let cache = Cache::new(limits(0, 3600, 0, 3), &m);
        let t0 = Instant::now();
        cache.insert("ns", "long.example", &[ip("192.0.2.1")], 300, t0);
        cache.insert("ns", "short.example", &[ip("192.0.2.2")], 10, t0);
        cache.insert("ns", "mid.example", &[ip("192.0.2.3")], 100, t0);
        assert_eq!(m.cache_entries.get(), 3);
        cache.insert("ns", "new.example", &[ip("192.0.2.4")], 200, t0);
        assert_eq!(cache.len(), 3);
        assert!(!cache.resolved("ns", "short.example", ip("192.0.2.2"), t0));
        for (name, addr) in [
            ("long.example", "192.0.2.1"),
            ("mid.example", "192.0.2.3"),
            ("new.example", "192.0.2.4"),
        ] {
            assert!(cache.resolved("ns", name, ip(addr), t0), "{name}");
        }
        assert_eq!(m.evictions_total(), 1);
        assert_eq!(m.cache_entries.get(), 3);

        // Expired entries make room before anything live is evicted, and count as expired.
        cache.insert(
            "ns",
            "later.example",
            &[ip("192.0.2.5")],
            10,
            t0 + secs(150),
        );
        assert_eq!(m.evictions_total(), 1);
        assert_eq!(m.cache_expired.get(), 1);
        assert!(!cache.resolved("ns", "mid.example", ip("192.0.2.3"), t0));
        assert_eq!(m.cache_entries.get(), 3);
    }

    #[test]
    fn a_namespace_flooding_a_full_cache_never_evicts_another_namespaces_live_entries() {
        let m = Metrics::default();
        let cache = Cache::new(limits(0, 3600, 0, 100), &m);
        let t0 = Instant::now();
        // tenant-a's entries are the closest to expiry: the first to go without fair shares.
        for i in 0..5u8 {
            cache.insert(
                "tenant-a",
                "api.example",
                &[IpAddr::from([192, 0, 2, i])],
                10,
                t0,
            );
        }
        for i in 0..1000u32 {
            let a = IpAddr::from(std::net::Ipv4Addr::from(0x0A00_0000 + i));
            cache.insert("tenant-b", &format!("n{i}.evil.example"), &[a], 3000, t0);
        }
        assert_eq!(cache.len(), 100);
        for i in 0..5u8 {
            assert!(cache.resolved("tenant-a", "api.example", IpAddr::from([192, 0, 2, i]), t0));
        }
        assert_eq!(m.evictions(EvictionReason::CacheFull), 905);
        assert_eq!(m.evictions(EvictionReason::NamespaceQuota), 0);
        // A namespace below its share takes room from the largest one.
        cache.insert("tenant-c", "c.example", &[ip("198.51.100.1")], 1, t0);
        assert!(cache.resolved("tenant-c", "c.example", ip("198.51.100.1"), t0));
        assert_eq!(cache.len(), 100);
        assert_eq!(m.evictions(EvictionReason::CacheFull), 906);
    }

    #[test]
    fn a_namespace_at_its_quota_evicts_only_its_own_entries_closest_to_expiry() {
        let m = Metrics::default();
        let l = CacheLimits {
            max_entries_per_namespace: 10,
            ..limits(0, 3600, 0, 1000)
        };
        let cache = Cache::new(l, &m);
        let t0 = Instant::now();
        cache.insert("tenant-a", "api.example", &[ip("192.0.2.1")], 1, t0);
        for i in 0..50u32 {
            let a = IpAddr::from(std::net::Ipv4Addr::from(0x0A00_0000 + i));
            cache.insert("tenant-b", "x.example", &[a], 100 + i, t0);
        }
        assert_eq!(cache.len(), 11);
        assert!(cache.resolved("tenant-a", "api.example", ip("192.0.2.1"), t0));
        // The ten longest-lived stay.
        for i in 0..50u32 {
            let a = IpAddr::from(std::net::Ipv4Addr::from(0x0A00_0000 + i));
            assert_eq!(
                cache.resolved("tenant-b", "x.example", a, t0),
                i >= 40,
                "{i}"
            );
        }
        assert_eq!(m.evictions(EvictionReason::NamespaceQuota), 40);
        assert_eq!(m.evictions(EvictionReason::CacheFull), 0);
        assert_eq!(m.cache_entries.get(), 11);
    }

    #[test]
    fn a_quota_beyond_the_cache_is_the_cache() {
        let l = CacheLimits {
            max_entries_per_namespace: usize::MAX,
            ..limits(0, 3600, 0, 100)
        };
        let cache = Cache::new(l, &Metrics::default());
        let t0 = Instant::now();
        for i in 0..200u32 {
            let a = IpAddr::from(std::net::Ipv4Addr::from(0x0A00_0000 + i));
            cache.insert("ns", "x.example", &[a], 60, t0);
        }
        assert_eq!(cache.len(), 100);
    }

    #[test]
    fn names_per_ip_are_capped() {
        let m = Metrics::default();
        let cache = Cache::new(limits(0, 3600, 0, 10_000), &m);
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        for i in 0..MAX_NAMES_PER_IP + 3 {
            cache.insert("ns", &format!("n{i}.example"), &[a], 100 + i as u32, t0);
        }
        assert_eq!(cache.names_for("ns", a, t0).len(), MAX_NAMES_PER_IP);
        assert!(!cache.resolved("ns", "n0.example", a, t0));
        assert!(cache.resolved("ns", "n3.example", a, t0));
        assert_eq!(m.evictions_total(), 3);
    }

    #[test]
    fn many_shards_keep_the_bound() {
        let m = Metrics::default();
        let cache = Cache::new(limits(0, 3600, 0, 20_000), &m);
        assert!(cache.shards.len() > 1);
        let t0 = Instant::now();
        for i in 0..30_000u32 {
            let a = IpAddr::from(std::net::Ipv4Addr::from(0x0A00_0000 + i));
            cache.insert("ns", "x.example", &[a], 60 + i % 100, t0);
        }
        assert!(
            cache.len() <= 20_000 + cache.shards.len(),
            "{}",
            cache.len()
        );
        assert!(cache.len() >= 19_000, "{}", cache.len());
        assert_eq!(m.cache_entries.get() as usize, cache.len());
        assert_eq!(m.evictions_total() as usize, 30_000 - cache.len());
        // Heaps stay proportional to the live entries.
        for shard in cache.shards.iter() {
            let s = shard.read().unwrap();
            assert!(s.expiries.len() <= 2 * s.len + 65);
        }
    }

    #[test]
    fn concurrent_readers_and_writers() {
        let cache = Arc::new(Cache::new(limits(0, 3600, 0, 100_000), &Metrics::default()));
        let t0 = Instant::now();
        std::thread::scope(|s| {
            for w in 0..2u32 {
                let cache = &cache;
                s.spawn(move || {
                    for i in 0..5_000u32 {
                        let a = IpAddr::from(std::net::Ipv4Addr::from(0x0A00_0000 + i));
                        cache.insert(&format!("ns{w}"), "x.example", &[a], 60, t0);
                    }
                });
            }
            for _ in 0..2 {
                let cache = &cache;
                s.spawn(move || {
                    for i in 0..5_000u32 {
                        let a = IpAddr::from(std::net::Ipv4Addr::from(0x0A00_0000 + i));
                        let _ = cache.resolved("ns0", "x.example", a, t0);
                        let _ = cache.names_for("ns1", a, t0);
                    }
                });
            }
        });
        assert_eq!(cache.len(), 10_000);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert { ns: u8, name: u8, ip: u8, ttl: u32 },
        Advance(u64),
        Purge,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0..3u8, 0..4u8, 0..6u8, 0..200u32).prop_map(|(ns, name, ip, ttl)| Op::Insert { ns, name, ip, ttl }),
            2 => (0..120u64).prop_map(Op::Advance),
            1 => Just(Op::Purge),
        ]
    }

    proptest! {
        /// The cache agrees with a plain map of (ns, name, ip) → max expiry, as long as it is
        /// not full.
        #[test]
        fn matches_a_simple_model(
            ops in proptest::collection::vec(op(), 1..200),
            min in 0..30u64,
            extra in 0..300u64,
            grace in 0..20u64,
        ) {
            let l = limits(min, min + extra, grace, 10_000);
            let m = Metrics::default();
            let cache = Cache::new(l, &m);
            let mut model: BTreeMap<(u8, u8, u8), Instant> = BTreeMap::new();
            let t0 = Instant::now();
            let mut now = t0;
            let addr = |i: u8| IpAddr::from([192, 0, 2, i]);
            for op in ops {
                match op {
                    Op::Insert { ns, name, ip, ttl } => {
                        cache.insert(&format!("ns{ns}"), &format!("N{name}.example."), &[addr(ip)], ttl, now);
                        let at = now + Duration::from_secs(u64::from(ttl)).clamp(l.min_ttl, l.max_ttl) + l.grace;
                        let e = model.entry((ns, name, ip)).or_insert(at);
                        *e = (*e).max(at);
                    }
                    Op::Advance(s) => now += Duration::from_secs(s),
                    Op::Purge => { cache.purge(now); }
                }
                for ns in 0..3u8 {
                    for ip in 0..6u8 {
                        let want: Vec<String> = (0..4u8)
                            .filter(|name| model.get(&(ns, *name, ip)).is_some_and(|at| *at > now))
                            .map(|name| format!("n{name}.example"))
                            .collect();
                        let got: Vec<String> = cache
                            .names_for(&format!("ns{ns}"), addr(ip), now)
                            .iter()
                            .map(|n| n.to_string())
                            .collect();
                        prop_assert_eq!(&got, &want);
                        for name in 0..4u8 {
                            prop_assert_eq!(
                                cache.resolved(&format!("ns{ns}"), &format!("n{name}.example"), addr(ip), now),
                                model.get(&(ns, name, ip)).is_some_and(|at| *at > now)
                            );
                        }
                    }
                }
                prop_assert_eq!(m.cache_entries.get() as usize, cache.len());
            }
            prop_assert_eq!(m.evictions_total(), 0);
        }

        /// Whatever is inserted, the cache never holds more than max_entries, and the gauge,
        /// the counters and the contents agree.
        #[test]
        fn bounded_under_pressure(
            ops in proptest::collection::vec(op(), 1..300),
            max_entries in 1..12usize,
        ) {
            let m = Metrics::default();
            let cache = Cache::new(limits(0, 3600, 0, max_entries), &m);
            let mut now = Instant::now();
            for op in ops {
                match op {
                    Op::Insert { ns, name, ip, ttl } => {
                        cache.insert(&format!("ns{ns}"), &format!("n{name}.example"), &[IpAddr::from([192, 0, 2, ip])], ttl, now);
                        // The newest observation always survives its own insert.
                        let held = cache.expiry(&format!("ns{ns}"), &format!("n{name}.example"), IpAddr::from([192, 0, 2, ip]));
                        prop_assert!(held.is_some());
                    }
                    Op::Advance(s) => now += Duration::from_secs(s),
                    Op::Purge => { cache.purge(now); }
                }
                prop_assert!(cache.len() <= max_entries);
                prop_assert_eq!(m.cache_entries.get() as usize, cache.len());
            }
        }
    }
}
