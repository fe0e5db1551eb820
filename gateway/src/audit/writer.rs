//! The data path's handle ([`Auditor`]) and the one writer task that owns the sink.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::config::AuditConfig;
use super::dedupe::Deduper;
use super::metrics::AuditMetrics;
use super::record::{AuditRecord, FlowDetails};
use super::sink::Sink;
use crate::policy::{Snapshot, StagedVerdict, Verdict};

/// At most one warning per this interval for write errors, and one for dropped events.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Messages handled per wake-up before the batch is written out.
const BATCH: usize = 256;

#[derive(Debug)]
enum Msg {
    Record(Box<AuditRecord>),
    Flush(oneshot::Sender<()>),
    Shutdown,
}

/// The handle the data path audits denials with. Cheap to clone; [`record`](Self::record)
/// never blocks and never awaits.
///
/// De-duplication (performed by the writer task, see `docs/audit-log.md`): the first denial
/// of a kind is written at once with `count` 1; identical denials (same source IP, namespace
/// and pod, destination IP, port and protocol, SNI, Host, verdict, reason and `decided_by`;
/// *not* the source port) within the window that it opens are counted and written as one
/// summary record when the window closes, with `count` = the number of those repeats. While
/// repeats keep coming, one summary per window follows; after a quiet window the next denial
/// is written at once again. Shutdown writes every pending count. The `count`s add up to
/// exactly the number of denials recorded.
#[derive(Debug, Clone)]
pub struct Auditor {
    tx: mpsc::Sender<Msg>,
    metrics: AuditMetrics,
    node: Arc<str>,
}

/// The writer task. [`shutdown`](Self::shutdown) writes everything pending and waits for it;
/// the task also ends (and writes everything) when every [`Auditor`] is dropped.
#[derive(Debug)]
pub struct AuditWriter {
    task: JoinHandle<()>,
    tx: mpsc::WeakSender<Msg>,
}

impl Auditor {
    /// Opens the configured sink and starts the writer task. Call inside a Tokio runtime.
    ///
    /// Fails only when the sink cannot be opened (a file sink without a path, or a file that
    /// cannot be created).
    pub fn spawn(
        config: &AuditConfig,
        node: impl Into<Arc<str>>,
        metrics: AuditMetrics,
    ) -> io::Result<(Auditor, AuditWriter)> {
        let sink = Sink::from_config(config)?;
        Ok(Auditor::spawn_with_sink(sink, config, node, metrics))
    }

    /// Starts the writer task on a sink of the caller's choosing; `config` supplies the
    /// de-duplication window and the channel capacity. Call inside a Tokio runtime.
    pub fn spawn_with_sink(
        sink: Sink,
        config: &AuditConfig,
        node: impl Into<Arc<str>>,
        metrics: AuditMetrics,
    ) -> (Auditor, AuditWriter) {
        let (tx, rx) = mpsc::channel(config.channel_capacity.max(1));
        let writer = Writer {
            rx,
            sink,
            dedupe: Deduper::new(config.dedupe_window),
            metrics: metrics.clone(),
            out: Vec::new(),
            line: Vec::with_capacity(512),
            offload: Handle::current().runtime_flavor() == RuntimeFlavor::MultiThread,
            error_log: RateLimit::default(),
            drop_log: RateLimit::default(),
            drops_logged: 0,
            finished: false,
        };
        let task = tokio::spawn(writer.run());
        let handle = AuditWriter {
            task,
            tx: tx.downgrade(),
        };
        (
            Auditor {
                tx,
                metrics,
                node: node.into(),
            },
            handle,
        )
    }

    /// Hands a record to the writer without waiting. When the channel is full (or the writer
    /// has stopped) the record is counted in `events_dropped` (as many events as its `count`).
    pub fn record(&self, record: AuditRecord) {
        let weight = record.count.max(1);
        if self.tx.try_send(Msg::Record(Box::new(record))).is_err() {
            self.metrics.events_dropped.inc_by(weight);
        }
    }

    /// Builds and records the audit record of a denial ([`AuditRecord::new`] with this node's
    /// name). An allowed verdict records nothing; for a connection refused after an allowed
    /// verdict use [`AuditRecord::denied_because`] and [`record`](Self::record).
    pub fn record_denial(&self, snapshot: &Snapshot, verdict: &Verdict, flow: &FlowDetails<'_>) {
        self.record_decision(snapshot, verdict, None, flow);
    }

    /// Like [`record_denial`](Self::record_denial), and an allowed verdict is recorded too
    /// when the staged policies would decide the flow otherwise (`staged` is `Some`); the
    /// record then carries the staged verdict.
    pub fn record_decision(
        &self,
        snapshot: &Snapshot,
        verdict: &Verdict,
        staged: Option<&StagedVerdict<'_>>,
        flow: &FlowDetails<'_>,
    ) {
        if !verdict.is_allowed() || staged.is_some() {
            self.record(AuditRecord::new(&self.node, snapshot, verdict, flow).staged(staged));
        }
    }

    /// The node name records are stamped with.
    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn metrics(&self) -> &AuditMetrics {
        &self.metrics
    }

    /// Waits until everything recorded before has been processed, every pending count has
    /// been written (open windows stay open) and the sink is flushed. Not for the data path:
    /// it waits for room in the channel.
    pub async fn flush(&self) {
        let (ack, done) = oneshot::channel();
        if self.tx.send(Msg::Flush(ack)).await.is_ok() {
            let _ = done.await;
        }
    }
}

impl AuditWriter {
    /// Processes everything recorded so far, writes every pending count, flushes the sink and
    /// ends the task. Records that arrive later are counted as dropped.
    pub async fn shutdown(self) {
        if let Some(tx) = self.tx.upgrade() {
            let _ = tx.send(Msg::Shutdown).await;
        }
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "the audit writer task failed");
        }
    }
}

/// Allows an action at most once per [`LOG_INTERVAL`].
#[derive(Debug, Default)]
struct RateLimit {
    last: Option<Instant>,
    skipped: u64,
}

impl RateLimit {
    /// `Some(skipped since the last time)` when allowed now.
    fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < LOG_INTERVAL => {
                self.skipped += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.skipped))
            }
        }
    }
}

struct Writer {
    rx: mpsc::Receiver<Msg>,
    sink: Sink,
    dedupe: Deduper,
    metrics: AuditMetrics,
    /// Records due to be written.
    out: Vec<AuditRecord>,
    line: Vec<u8>,
    /// Sink I/O runs in `block_in_place` (multi-thread runtime only), so that a slow sink
    /// does not hold up other tasks on this worker.
    offload: bool,
    error_log: RateLimit,
    drop_log: RateLimit,
    drops_logged: u64,
    finished: bool,
}

enum Wake {
    Msg(Option<Msg>),
    Timer,
}

impl Writer {
    async fn run(mut self) {
        loop {
            let deadline = self.dedupe.next_deadline();
            let wake = tokio::select! {
                msg = self.rx.recv() => Wake::Msg(msg),
                () = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => Wake::Timer,
            };
            let mut go_on = true;
            match wake {
                Wake::Timer => self.dedupe.expire(Instant::now(), &mut self.out),
                Wake::Msg(None) => go_on = false,
                Wake::Msg(Some(msg)) => {
                    go_on = self.handle(msg);
                    for _ in 1..BATCH {
                        if !go_on {
                            break;
                        }
                        match self.rx.try_recv() {
                            Ok(msg) => go_on = self.handle(msg),
                            Err(_) => break,
                        }
                    }
                }
            }
            self.write_out();
            self.log_drops();
            if !go_on {
                break;
            }
        }
        self.finish();
    }

    /// Returns false on shutdown.
    fn handle(&mut self, msg: Msg) -> bool {
        match msg {
            Msg::Record(record) => {
                let suppressed = self.dedupe.observe(Instant::now(), *record, &mut self.out);
                self.metrics.events_suppressed.inc_by(suppressed);
            }
            Msg::Flush(ack) => {
                self.dedupe.flush(&mut self.out);
                self.write_out();
                if let Err(e) = self.sink.flush() {
                    self.write_error("flushing the audit sink", &e);
                }
                let _ = ack.send(());
            }
            Msg::Shutdown => return false,
        }
        true
    }

    /// Writes the due records and flushes the sink.
    fn write_out(&mut self) {
        if self.out.is_empty() {
            return;
        }
        let mut records = std::mem::take(&mut self.out);
        if self.offload {
            tokio::task::block_in_place(|| self.write_records(&records));
        } else {
            self.write_records(&records);
        }
        records.clear();
        self.out = records;
    }

    fn write_records(&mut self, records: &[AuditRecord]) {
        for record in records {
            self.line.clear();
            serde_json::to_writer(&mut self.line, record)
                .expect("an audit record always serializes");
            self.line.push(b'\n');
            let result = self.sink.write_line(&self.line);
            if let Some(e) = result.rotation {
                self.write_error("rotating the audit file", &e);
            }
            match result.written {
                Ok(()) => {
                    self.metrics.records_written.inc();
                }
                Err(e) => self.write_error("writing an audit record", &e),
            }
        }
        if let Err(e) = self.sink.flush() {
            self.write_error("flushing the audit sink", &e);
        }
    }

    fn write_error(&mut self, what: &str, e: &io::Error) {
        self.metrics.write_errors.inc();
        if let Some(skipped) = self.error_log.allow(Instant::now()) {
            tracing::warn!(error = %e, sink = ?self.sink, errors_not_logged = skipped, "{what} failed");
        }
    }

    fn log_drops(&mut self) {
        let dropped = self.metrics.events_dropped.get();
        if dropped > self.drops_logged && self.drop_log.allow(Instant::now()).is_some() {
            tracing::warn!(
                dropped = dropped - self.drops_logged,
                "audit events dropped: the channel to the writer was full (chokepoint_audit_events_dropped_total)"
            );
            self.drops_logged = dropped;
        }
    }

    /// Processes what is still queued, writes every pending count and flushes. Runs once, at
    /// the end of the task or when the task is dropped (runtime shutdown).
    fn finish(&mut self) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        self.rx.close();
        let mut acks = Vec::new();
        while let Ok(msg) = self.rx.try_recv() {
            match msg {
                Msg::Record(record) => {
                    let suppressed = self.dedupe.observe(Instant::now(), *record, &mut self.out);
                    self.metrics.events_suppressed.inc_by(suppressed);
                }
                Msg::Flush(ack) => acks.push(ack),
                Msg::Shutdown => {}
            }
        }
        self.dedupe.drain(&mut self.out);
        // Directly: this may run while the runtime shuts down.
        let records = std::mem::take(&mut self.out);
        self.write_records(&records);
        self.log_drops();
        for ack in acks {
            let _ = ack.send(());
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.finish();
    }
}
