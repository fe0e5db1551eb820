//! Collapsing bursts of identical denials (pure logic; the writer task drives it).
//!
//! Semantics, per *key* (everything that identifies a denial except the source port, the
//! time, the DNS names and the node — see [`Key`]):
//!
//! 1. A denial whose key is not tracked is emitted at once, unchanged (`count` 1), and opens
//!    a window of length `W` for its key.
//! 2. Every further denial with that key inside the window is *suppressed*: counted, and
//!    remembered as the latest.
//! 3. When the window closes: if nothing was suppressed, the key is forgotten (the next
//!    denial is emitted at once again). Otherwise one *summary* record is emitted — the latest
//!    suppressed denial with `count` = the number suppressed, `first_seen`/`last_seen` (when
//!    more than one) and `time` = `last_seen` — and a new window of length `W` opens right
//!    away, so that a steady flood produces one record per window.
//! 4. A flush emits every pending summary at once (windows stay open); a drain (shutdown)
//!    emits them and forgets every key.
//!
//! So the `count`s of all records emitted for a key add up to exactly the number of denials
//! observed for it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::IpAddr;
use std::time::Duration;

use chokepoint_config::model::Protocol;
use tokio::time::Instant;

use super::record::{AuditReason, AuditRecord, DecidedBy, StagedRecord};
use super::time::Timestamp;
use crate::policy::Decision;

/// Most keys tracked at once; beyond it new keys are emitted without de-duplication (every
/// denial gets its own record), which bounds memory under a scan of many destinations.
pub const MAX_TRACKED_KEYS: usize = 65_536;

/// What makes two denials "identical".
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    src_ip: IpAddr,
    src_namespace: Option<String>,
    src_pod: Option<String>,
    dst_ip: IpAddr,
    dst_port: u16,
    protocol: Protocol,
    sni: Option<String>,
    host: Option<String>,
    /// Metadata denials of different requests are different denials.
    method: Option<String>,
    path: Option<String>,
    /// A backend reached through its Service and directly are different denials.
    cluster_ip: Option<IpAddr>,
    service_port: Option<u16>,
    verdict: Decision,
    reason: AuditReason,
    decided_by: DecidedBy,
    /// A staged difference is part of what happened.
    staged: Option<StagedRecord>,
}

impl Key {
    fn of(r: &AuditRecord) -> Key {
        Key {
            src_ip: r.source.ip,
            src_namespace: r.source.namespace.clone(),
            src_pod: r.source.pod.clone(),
            dst_ip: r.destination.ip,
            dst_port: r.destination.port,
            protocol: r.destination.protocol,
            sni: r.destination.sni.clone(),
            host: r.destination.host.clone(),
            method: r.destination.method.clone(),
            path: r.destination.path.clone(),
            cluster_ip: r.destination.cluster_ip,
            service_port: r.destination.service.as_ref().map(|s| s.port),
            verdict: r.verdict,
            reason: r.reason.clone(),
            decided_by: r.decided_by.clone(),
            staged: r.staged.clone(),
        }
    }
}

#[derive(Debug)]
struct Slot {
    key: Key,
    deadline: Instant,
    pending: Option<Pending>,
}

#[derive(Debug)]
struct Pending {
    count: u64,
    first_seen: Timestamp,
    latest: AuditRecord,
}

#[derive(Debug)]
pub(crate) struct Deduper {
    window: Duration,
    ids: HashMap<Key, u64>,
    slots: HashMap<u64, Slot>,
    deadlines: BinaryHeap<Reverse<(Instant, u64)>>,
    next_id: u64,
    max_keys: usize,
}

impl Deduper {
    /// A zero window turns de-duplication off (every denial is emitted at once).
    pub fn new(window: Duration) -> Deduper {
        Deduper::with_limit(window, MAX_TRACKED_KEYS)
    }

    pub fn with_limit(window: Duration, max_keys: usize) -> Deduper {
        Deduper {
            window,
            ids: HashMap::new(),
            slots: HashMap::new(),
            deadlines: BinaryHeap::new(),
            next_id: 0,
            max_keys,
        }
    }

    /// Takes one record (normally `count` 1; a record that already stands for several
    /// denials counts as that many). Closes due windows first. Returns how many denials were
    /// suppressed (0 when the record was emitted to `out`).
    pub fn observe(
        &mut self,
        now: Instant,
        record: AuditRecord,
        out: &mut Vec<AuditRecord>,
    ) -> u64 {
        self.expire(now, out);
        if self.window.is_zero() {
            out.push(record);
            return 0;
        }
        let key = Key::of(&record);
        if let Some(id) = self.ids.get(&key) {
            let slot = self.slots.get_mut(id).expect("every id has a slot");
            let weight = record.count.max(1);
            match &mut slot.pending {
                Some(p) => {
                    p.count += weight;
                    p.latest = record;
                }
                None => {
                    slot.pending = Some(Pending {
                        count: weight,
                        first_seen: record.first_seen.unwrap_or(record.time),
                        latest: record,
                    })
                }
            }
            return weight;
        }
        if self.ids.len() < self.max_keys {
            let id = self.next_id;
            self.next_id += 1;
            let deadline = now + self.window;
            self.ids.insert(key.clone(), id);
            self.slots.insert(
                id,
                Slot {
                    key,
                    deadline,
                    pending: None,
                },
            );
            self.deadlines.push(Reverse((deadline, id)));
        }
        out.push(record);
        0
    }

    /// The earliest window that is still open.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.peek().map(|Reverse((at, _))| *at)
    }

    /// Closes every window that ends at or before `now`.
    pub fn expire(&mut self, now: Instant, out: &mut Vec<AuditRecord>) {
        while let Some(&Reverse((deadline, id))) = self.deadlines.peek() {
            if deadline > now {
                break;
            }
            self.deadlines.pop();
            let Some(slot) = self.slots.get_mut(&id) else {
                continue;
            };
            if slot.deadline != deadline {
                continue;
            }
            match slot.pending.take() {
                Some(p) => {
                    out.push(p.summary());
                    // The burst may go on: keep counting in a new window.
                    slot.deadline = deadline + self.window;
                    self.deadlines.push(Reverse((slot.deadline, id)));
                }
                None => {
                    let slot = self.slots.remove(&id).expect("present");
                    self.ids.remove(&slot.key);
                }
            }
        }
    }

    /// Emits every pending summary now; windows stay open.
    pub fn flush(&mut self, out: &mut Vec<AuditRecord>) {
        let mut pending: Vec<(u64, Pending)> = self
            .slots
            .iter_mut()
            .filter_map(|(id, s)| s.pending.take().map(|p| (*id, p)))
            .collect();
        // In the order the keys were first seen, for a stable output.
        pending.sort_unstable_by_key(|(id, _)| *id);
        out.extend(pending.into_iter().map(|(_, p)| p.summary()));
    }

    /// Emits every pending summary and forgets every key (shutdown).
    pub fn drain(&mut self, out: &mut Vec<AuditRecord>) {
        self.flush(out);
        self.ids.clear();
        self.slots.clear();
        self.deadlines.clear();
    }

    /// Keys with an open window.
    #[cfg(test)]
    pub fn tracked(&self) -> usize {
        self.ids.len()
    }
}

impl Pending {
    fn summary(self) -> AuditRecord {
        let mut r = self.latest;
        let last_seen = r.last_seen.unwrap_or(r.time);
        r.count = self.count;
        r.time = last_seen;
        if self.count > 1 {
            r.first_seen = Some(self.first_seen);
            r.last_seen = Some(last_seen);
        } else {
            r.first_seen = None;
            r.last_seen = None;
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::testing::sample;

    const W: Duration = Duration::from_secs(1);

    fn at(r: AuditRecord, ms: i64) -> AuditRecord {
        r.at(Timestamp::from_unix_millis(ms))
    }

    #[test]
    fn first_at_once_then_one_summary_per_window() {
        let t0 = Instant::now();
        let mut d = Deduper::new(W);
        let mut out = Vec::new();
        assert_eq!(d.observe(t0, at(sample(443), 1000), &mut out), 0);
        assert_eq!(out.len(), 1, "the first denial is written at once");
        let mut suppressed = 0;
        for i in 1..=9u64 {
            let mut r = at(sample(443), 1000 + i as i64 * 10);
            r.source.port = 40_000 + i as u16; // the source port is not part of the key
            suppressed += d.observe(t0 + Duration::from_millis(i * 10), r, &mut out);
        }
        assert_eq!((out.len(), suppressed), (1, 9));
        assert_eq!(d.next_deadline(), Some(t0 + W));
        d.expire(t0 + W - Duration::from_millis(1), &mut out);
        assert_eq!(out.len(), 1);
        d.expire(t0 + W, &mut out);
        assert_eq!(out.len(), 2);
        let s = &out[1];
        assert_eq!(s.count, 9);
        assert_eq!(s.source.port, 40_009, "the latest denial");
        assert_eq!(s.first_seen, Some(Timestamp::from_unix_millis(1010)));
        assert_eq!(s.last_seen, Some(Timestamp::from_unix_millis(1090)));
        assert_eq!(s.time, Timestamp::from_unix_millis(1090));

        // Still a burst: counted in the next window, no immediate record.
        d.observe(
            t0 + W + Duration::from_millis(5),
            at(sample(443), 2005),
            &mut out,
        );
        assert_eq!(out.len(), 2);
        d.expire(t0 + 2 * W, &mut out);
        assert_eq!(out.len(), 3);
        assert_eq!(
            (out[2].count, out[2].first_seen, out[2].last_seen),
            (1, None, None)
        );
        assert_eq!(out[2].time, Timestamp::from_unix_millis(2005));
        // A quiet window forgets the key; the next denial is written at once again.
        d.expire(t0 + 3 * W, &mut out);
        assert_eq!((out.len(), d.tracked()), (3, 0));
        d.observe(t0 + 3 * W, sample(443), &mut out);
        assert_eq!((out.len(), out[3].count), (4, 1));
        assert_eq!(out.iter().map(|r| r.count).sum::<u64>(), 1 + 9 + 1 + 1);
    }

    #[test]
    fn different_keys_are_not_merged() {
        let t0 = Instant::now();
        let mut d = Deduper::new(W);
        let mut out = Vec::new();
        let mut other_pod = sample(443);
        other_pod.source.pod = Some("api".into());
        let mut other_rule = sample(443);
        other_rule.decided_by.rule_index = Some(1);
        let mut other_reason = sample(443);
        other_reason.reason = AuditReason::SNI_MISMATCH;
        let mut other_sni = sample(443);
        other_sni.destination.sni = Some("example.org".into());
        let mut udp = sample(443);
        udp.destination.protocol = Protocol::Udp;
        let user_data = sample(443).request("GET", "/latest/user-data");
        let identity = sample(443).request("GET", "/latest/dynamic/instance-identity/document");
        for r in [
            sample(443),
            sample(80),
            other_pod,
            other_rule,
            other_reason,
            other_sni,
            udp,
            user_data,
            identity,
        ] {
            assert_eq!(d.observe(t0, r, &mut out), 0);
        }
        assert_eq!((out.len(), d.tracked()), (9, 9));
    }

    #[test]
    fn flush_and_drain_emit_pending_counts() {
        let t0 = Instant::now();
        let mut d = Deduper::new(W);
        let mut out = Vec::new();
        for _ in 0..5 {
            d.observe(t0, sample(443), &mut out);
            d.observe(t0, sample(80), &mut out);
        }
        d.flush(&mut out);
        assert_eq!(
            out.iter()
                .map(|r| (r.destination.port, r.count))
                .collect::<Vec<_>>(),
            [(443, 1), (80, 1), (443, 4), (80, 4)]
        );
        assert_eq!(d.tracked(), 2, "windows stay open after a flush");
        d.observe(t0, sample(443), &mut out);
        d.drain(&mut out);
        assert_eq!(out.last().unwrap().count, 1);
        assert_eq!(d.tracked(), 0);
        assert_eq!(d.next_deadline(), None);
        assert_eq!(out.iter().map(|r| r.count).sum::<u64>(), 11);
    }

    #[test]
    fn zero_window_and_key_limit_emit_everything() {
        let t0 = Instant::now();
        let mut out = Vec::new();
        let mut off = Deduper::new(Duration::ZERO);
        for _ in 0..3 {
            off.observe(t0, sample(443), &mut out);
        }
        assert_eq!((out.len(), off.tracked()), (3, 0));

        out.clear();
        let mut small = Deduper::with_limit(W, 1);
        for _ in 0..3 {
            small.observe(t0, sample(443), &mut out);
            small.observe(t0, sample(80), &mut out);
        }
        // 443 is tracked (1 + 2 suppressed), 80 is not (3 records).
        assert_eq!(
            out.iter().map(|r| r.destination.port).collect::<Vec<_>>(),
            [443, 80, 80, 80]
        );
        small.drain(&mut out);
        assert_eq!(out.iter().map(|r| r.count).sum::<u64>(), 6);
    }
}
