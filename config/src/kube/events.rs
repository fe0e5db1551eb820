//! Events on policy objects, so that `kubectl describe` (and `kubectl get events`) shows
//! their owner what each gateway made of them: enforced (or staged) on which node at which
//! generation and how many pods it selects there, or why it was skipped.
//!
//! Every gateway reports every change of every policy object once ([`policy_event`]). What
//! reaches the API server is bounded per gateway ([`Publisher`]): a [`TokenBucket`] lets
//! `burst` Events through at once and then `perSecond`; the Events waiting for it sit in a
//! queue holding at most one per object (a newer change to the same object replaces the
//! waiting one: *superseded*) and at most [`EVENTS_QUEUE`](crate::settings::defaults::EVENTS_QUEUE)
//! objects (beyond that an Event is *dropped*). A failed publish is not retried: Events are
//! advice, the snapshot never waits for them.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::objects::{Findings, PolicyObject};
use super::ratelimit::TokenBucket;
use crate::settings::EventLimits;

pub use kube::runtime::events::Reporter;

/// Why an Event is published (its `reason`).
pub const REASON_INVALID: &str = "InvalidPolicy";
pub const REASON_FAIL_CLOSED: &str = "UnknownFieldsFailClosed";
pub const REASON_ENFORCED: &str = "Enforced";
pub const REASON_STAGED: &str = "Staged";

/// What one gateway has made of one version of a policy object.
#[derive(Debug, Clone, Copy)]
pub struct Installed<'a> {
    pub node: &'a str,
    /// The gateway's snapshot generation that holds this version.
    pub snapshot: u64,
    /// The pods on this node its subject selects; `None` when it is not in the snapshot
    /// (skipped as invalid).
    pub selects: Option<usize>,
}

/// The Event for one version of a policy object on one gateway. Events carry at most 1 kB of
/// note.
pub fn policy_event(object: &PolicyObject, at: Installed<'_>) -> Event {
    let node = at.node;
    let version = object.revision.describe();
    let selects = at.selects.unwrap_or(0);
    let pods = if selects == 1 { "pod" } else { "pods" };
    let in_force = if object.revision.staged {
        format!(
            "staged on node {node} at {version} (snapshot {}): decided a second time and audited, decides nothing; would select {selects} {pods} here",
            at.snapshot
        )
    } else {
        format!(
            "enforced on node {node} at {version} (snapshot {}); selects {selects} {pods} here",
            at.snapshot
        )
    };
    let (type_, reason, action, note) = match &object.findings {
        Findings::Errors(message) => (
            EventType::Warning,
            REASON_INVALID,
            "Validate",
            format!(
                "skipped by Chokepoint on node {node} at {version}, the rest of the policies apply: {message}"
            ),
        ),
        Findings::Warnings(message) => (
            EventType::Warning,
            REASON_FAIL_CLOSED,
            "Enforce",
            format!(
                "{in_force}; rules holding fields this gateway does not know fail closed: {message}"
            ),
        ),
        Findings::None if object.revision.staged => {
            (EventType::Normal, REASON_STAGED, "Stage", in_force)
        }
        Findings::None => (EventType::Normal, REASON_ENFORCED, "Enforce", in_force),
    };
    Event {
        type_,
        reason: reason.to_owned(),
        note: Some(truncate(note, 1000)),
        action: action.to_owned(),
        secondary: None,
    }
}

/// `text` cut to at most `max` bytes (on a character boundary), marked with `...`.
pub fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut cut = max - 3;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("...");
    }
    text
}

/// What became of an Event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Published,
    /// A newer change of the same object replaced it while it waited.
    Superseded,
    /// The queue was full.
    Dropped,
    /// The API server refused it or could not be reached.
    Failed,
}

/// Events waiting for the rate limit: at most one per object (by UID), in arrival order.
#[derive(Debug)]
pub struct EventQueue<T> {
    order: VecDeque<String>,
    waiting: HashMap<String, T>,
    capacity: usize,
}

impl<T> EventQueue<T> {
    pub fn new(capacity: usize) -> Self {
        EventQueue {
            order: VecDeque::new(),
            waiting: HashMap::new(),
            capacity,
        }
    }

    /// Queues `item` for `key`. Superseded: it took the place of an older one for the same
    /// key; Dropped: the queue is full (the item is not kept).
    pub fn offer(&mut self, key: &str, item: T) -> Option<Outcome> {
        if let Some(slot) = self.waiting.get_mut(key) {
            *slot = item;
            return Some(Outcome::Superseded);
        }
        if self.waiting.len() >= self.capacity {
            return Some(Outcome::Dropped);
        }
        self.order.push_back(key.to_owned());
        self.waiting.insert(key.to_owned(), item);
        None
    }

    pub fn pop(&mut self) -> Option<T> {
        let key = self.order.pop_front()?;
        self.waiting.remove(&key)
    }

    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

/// Told what became of each Event (type, outcome): the gateway counts them.
pub type OnOutcome = Arc<dyn Fn(EventType, Outcome) + Send + Sync>;

struct Pending {
    event: Event,
    reference: ObjectReference,
}

type Queue = Arc<(Mutex<EventQueue<Pending>>, Notify)>;

/// Publishes Events at the rate the settings allow; see the module doc. Dropping it stops
/// the publishing task (waiting Events are lost).
pub struct Publisher {
    queue: Queue,
    on_outcome: OnOutcome,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").finish_non_exhaustive()
    }
}

impl Publisher {
    /// Starts the publishing task on the current runtime.
    pub fn start(
        client: Client,
        reporter: Reporter,
        limits: &EventLimits,
        capacity: usize,
        on_outcome: OnOutcome,
    ) -> Publisher {
        let queue: Queue = Arc::new((Mutex::new(EventQueue::new(capacity)), Notify::new()));
        let bucket = TokenBucket::new(limits.per_second, limits.burst, tokio::time::Instant::now());
        let task = tokio::spawn(publish(
            Recorder::new(client, reporter),
            queue.clone(),
            bucket,
            on_outcome.clone(),
        ));
        Publisher {
            queue,
            on_outcome,
            task,
        }
    }

    /// Queues an Event about the object with this UID; never waits.
    pub fn offer(&self, uid: &str, event: Event, reference: ObjectReference) {
        let type_ = event.type_;
        let outcome = self
            .queue
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .offer(uid, Pending { event, reference });
        // A superseded Event was of the same object: counted under the newer one's type.
        if let Some(o) = outcome {
            (self.on_outcome)(type_, o);
        }
        if outcome != Some(Outcome::Dropped) {
            self.queue.1.notify_one();
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn publish(recorder: Recorder, queue: Queue, mut bucket: TokenBucket, on_outcome: OnOutcome) {
    loop {
        let next = queue.0.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let Some(p) = next else {
            queue.1.notified().await;
            continue;
        };
        bucket.take().await;
        let outcome = match recorder.publish(&p.event, &p.reference).await {
            Ok(()) => Outcome::Published,
            Err(e) => {
                tracing::warn!(target: "kube", kind = ?p.reference.kind, name = ?p.reference.name, "cannot publish an Event: {e}");
                Outcome::Failed
            }
        };
        on_outcome(p.event.type_, outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::objects::Revision;

    fn object(findings: Findings, staged: bool) -> PolicyObject {
        PolicyObject {
            kind: "DeveloperNetworkPolicy",
            uid: "u".into(),
            reference: ObjectReference {
                name: Some("p".into()),
                namespace: Some("a".into()),
                ..Default::default()
            },
            revision: Revision {
                generation: Some(3),
                resource_version: "17".into(),
                staged,
            },
            findings,
            conditions: Vec::new(),
        }
    }

    #[test]
    fn the_note_names_node_generation_and_selected_pods() {
        let at = Installed {
            node: "node-a",
            snapshot: 9,
            selects: Some(2),
        };
        let e = policy_event(&object(Findings::None, false), at);
        assert_eq!(
            (e.type_, e.reason.as_str()),
            (EventType::Normal, "Enforced")
        );
        assert_eq!(
            e.note.unwrap(),
            "enforced on node node-a at generation 3 (snapshot 9); selects 2 pods here"
        );
        let e = policy_event(&object(Findings::None, true), at);
        assert_eq!(e.reason, "Staged");
        assert!(
            e.note
                .unwrap()
                .starts_with("staged on node node-a at generation 3")
        );
        let e = policy_event(&object(Findings::Warnings("x: unknown".into()), false), at);
        assert_eq!(
            (e.type_, e.reason.as_str()),
            (EventType::Warning, REASON_FAIL_CLOSED)
        );
        assert!(e.note.unwrap().ends_with("fail closed: x: unknown"));
        let bad = Installed {
            selects: None,
            ..at
        };
        let e = policy_event(&object(Findings::Errors("é".repeat(2000)), false), bad);
        assert_eq!(
            (e.type_, e.reason.as_str()),
            (EventType::Warning, REASON_INVALID)
        );
        let note = e.note.unwrap();
        assert!(
            note.len() <= 1000 && note.ends_with("..."),
            "{}",
            note.len()
        );
        assert!(note.starts_with("skipped by Chokepoint on node node-a at generation 3"));
    }

    #[test]
    fn the_queue_keeps_one_per_object_and_drops_beyond_its_capacity() {
        let mut q = EventQueue::new(2);
        assert_eq!(q.offer("a", 1), None);
        assert_eq!(q.offer("a", 2), Some(Outcome::Superseded));
        assert_eq!(q.offer("b", 3), None);
        assert_eq!(q.offer("c", 4), Some(Outcome::Dropped));
        // Full, but a waiting object's newer change still takes its place.
        assert_eq!(q.offer("b", 5), Some(Outcome::Superseded));
        assert_eq!(q.len(), 2);
        assert_eq!(q.pop(), Some(2));
        assert_eq!(q.pop(), Some(5));
        assert_eq!(q.pop(), None);
        assert!(q.is_empty());
        assert_eq!(q.offer("c", 6), None);
    }
}
