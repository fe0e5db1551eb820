//! Events about policy objects that fail validation, so that `kubectl describe` (and
//! `kubectl get events`) shows their owner what is wrong.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder};
use tokio::sync::mpsc;

use super::objects::Notice;

pub use kube::runtime::events::Reporter;

/// Why an Event is published (its `reason`).
pub const REASON_INVALID: &str = "InvalidPolicy";
pub const REASON_FAIL_CLOSED: &str = "UnknownFieldsFailClosed";

/// The Event for a notice. Events carry at most 1 kB of note.
pub fn event(notice: &Notice) -> Event {
    let mut note = if notice.skipped {
        format!(
            "skipped by Chokepoint, the rest of the policies apply: {}",
            notice.message
        )
    } else {
        format!(
            "applied, but rules holding fields this gateway does not know fail closed: {}",
            notice.message
        )
    };
    if note.len() > 1000 {
        let mut cut = 997;
        while !note.is_char_boundary(cut) {
            cut -= 1;
        }
        note.truncate(cut);
        note.push_str("...");
    }
    Event {
        type_: EventType::Warning,
        reason: if notice.skipped {
            REASON_INVALID
        } else {
            REASON_FAIL_CLOSED
        }
        .to_owned(),
        note: Some(note),
        action: "Validate".to_owned(),
        secondary: None,
    }
}

/// Publishes the notices until the channel closes. A failure to publish is logged, never
/// retried: Events are advice, the snapshot does not wait for them.
pub async fn publish(client: Client, reporter: Reporter, mut notices: mpsc::Receiver<Notice>) {
    let recorder = Recorder::new(client, reporter);
    while let Some(n) = notices.recv().await {
        let reference: &ObjectReference = &n.reference;
        if let Err(e) = recorder.publish(&event(&n), reference).await {
            tracing::warn!(target: "kube", kind = n.kind, name = ?reference.name, "cannot publish an Event: {e}");
        }
    }
}
