//! Graceful shutdown: stop accepting, let live connections finish up to a deadline.
//!
//! Every connection task holds a [`Watch`]; [`Trigger::drain`] signals them all and waits
//! until every watch is dropped (or the deadline passes).

use std::convert::Infallible;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

/// Starts a drain.
#[derive(Debug)]
pub struct Trigger {
    signal: watch::Sender<bool>,
    done: mpsc::Receiver<Infallible>,
}

/// Held by everything that must finish before the process exits.
#[derive(Debug, Clone)]
pub struct Watch {
    signal: watch::Receiver<bool>,
    _alive: mpsc::Sender<Infallible>,
}

pub fn channel() -> (Trigger, Watch) {
    let (signal, signal_rx) = watch::channel(false);
    let (alive, done) = mpsc::channel(1);
    (
        Trigger { signal, done },
        Watch {
            signal: signal_rx,
            _alive: alive,
        },
    )
}

impl Trigger {
    /// Signals every watch, then waits until all are dropped or `deadline` passes.
    /// Returns true when everything finished in time.
    pub async fn drain(mut self, deadline: Duration) -> bool {
        let _ = self.signal.send(true);
        tokio::time::timeout(deadline, self.done.recv())
            .await
            .is_ok()
    }
}

impl Watch {
    /// Resolves once a drain has started.
    pub async fn signaled(&mut self) {
        let _ = self.signal.wait_for(|draining| *draining).await;
    }

    pub fn is_draining(&self) -> bool {
        *self.signal.borrow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drain_waits_for_every_watch() {
        let (trigger, watch) = channel();
        let mut w = watch.clone();
        let task = tokio::spawn(async move {
            w.signaled().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(w);
        });
        drop(watch);
        assert!(trigger.drain(Duration::from_secs(5)).await);
        task.await.unwrap();
    }

    #[tokio::test]
    async fn drain_gives_up_at_the_deadline() {
        let (trigger, watch) = channel();
        let held = watch.clone();
        drop(watch);
        assert!(!trigger.drain(Duration::from_millis(20)).await);
        drop(held);
    }
}
