//! The data path's handle ([`FlowLog`]) and the aggregator task that owns the sink.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use chokepoint_config::model::Protocol;
use chokepoint_config::settings::Flows;
use chokepoint_dns::Cache;
use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::aggregate::{Aggregator, Closed, Observed};
use super::metrics::FlowLogMetrics;
use crate::audit::{Sink, Timestamp};
use crate::policy::{Snapshot, Verdict};

/// Events the data path may queue ahead of the aggregator.
const CHANNEL_CAPACITY: usize = 16_384;

/// One allowed flow as the data path saw it: compact, with the snapshot that decided it, so
/// that pods, Services and policies are named by the aggregator, not on the data path.
#[derive(Debug)]
pub struct FlowEvent {
    pub snapshot: Arc<Snapshot>,
    pub verdict: Verdict,
    pub src: IpAddr,
    /// The destination the flow was decided on (the backend of a Service).
    pub dst: SocketAddr,
    pub protocol: Protocol,
    /// The `ClusterIP:port` the pod addressed, when it went to a Service.
    pub addressed: Option<SocketAddr>,
    /// The names it was decided with (the shown name once a `domainNames` Accept checked
    /// it); empty: the aggregator looks the destination's names up.
    pub names: Vec<Arc<str>>,
}

#[derive(Debug)]
enum Msg {
    Event(Box<FlowEvent>),
    Flush(oneshot::Sender<()>),
    Shutdown,
}

/// The handle the data path logs allowed flows with. Cheap to clone; [`record`](Self::record)
/// never blocks and never awaits.
#[derive(Debug, Clone)]
pub struct FlowLog {
    tx: mpsc::Sender<Msg>,
    metrics: FlowLogMetrics,
}

/// The aggregator task; [`shutdown`](Self::shutdown) closes the open window, writes it and
/// waits.
#[derive(Debug)]
pub struct FlowLogWriter {
    task: JoinHandle<()>,
    tx: mpsc::WeakSender<Msg>,
}

impl FlowLog {
    /// Opens the configured sink and starts the aggregator. `None` when the flow log is off.
    /// Call inside a Tokio runtime.
    pub fn spawn(
        settings: &Flows,
        node: Arc<str>,
        names: Option<Arc<Cache>>,
        metrics: FlowLogMetrics,
    ) -> io::Result<Option<(FlowLog, FlowLogWriter)>> {
        if !settings.enabled {
            return Ok(None);
        }
        let sink = Sink::open(
            settings.sink,
            settings.path.as_deref(),
            settings.max_bytes,
            settings.max_files,
        )?;
        Ok(Some(FlowLog::spawn_with_sink(
            sink, settings, node, names, metrics,
        )))
    }

    /// Starts the aggregator on a sink of the caller's choosing.
    pub fn spawn_with_sink(
        sink: Sink,
        settings: &Flows,
        node: Arc<str>,
        names: Option<Arc<Cache>>,
        metrics: FlowLogMetrics,
    ) -> (FlowLog, FlowLogWriter) {
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let task = Task {
            rx,
            sink,
            aggregator: Aggregator::new(
                node,
                settings.namespaces.clone(),
                names,
                settings.max_keys,
                Timestamp::now(),
            ),
            window: settings.window,
            metrics: metrics.clone(),
            dropped_reported: 0,
            line: Vec::with_capacity(512),
            offload: Handle::current().runtime_flavor() == RuntimeFlavor::MultiThread,
            finished: false,
        };
        let handle = FlowLogWriter {
            task: tokio::spawn(task.run()),
            tx: tx.downgrade(),
        };
        (FlowLog { tx, metrics }, handle)
    }

    /// Hands an allowed flow to the aggregator without waiting; when the channel is full it
    /// is counted as dropped (and reported in the window's `unitemized.dropped`).
    pub fn record(&self, event: FlowEvent) {
        if self.tx.try_send(Msg::Event(Box::new(event))).is_err() {
            self.metrics.events_dropped.inc();
        }
    }

    /// Waits until everything recorded before is counted, then closes the open window and
    /// writes it. Not for the data path.
    pub async fn flush(&self) {
        let (ack, done) = oneshot::channel();
        if self.tx.send(Msg::Flush(ack)).await.is_ok() {
            let _ = done.await;
        }
    }
}

impl FlowLogWriter {
    /// Counts everything recorded so far, writes the open window and ends the task.
    pub async fn shutdown(self) {
        if let Some(tx) = self.tx.upgrade() {
            let _ = tx.send(Msg::Shutdown).await;
        }
        if let Err(e) = self.task.await {
            tracing::error!(target: "flows", error = %e, "the flow log task failed");
        }
    }
}

struct Task {
    rx: mpsc::Receiver<Msg>,
    sink: Sink,
    aggregator: Aggregator,
    window: Duration,
    metrics: FlowLogMetrics,
    /// `events_dropped` as of the last window written.
    dropped_reported: u64,
    line: Vec<u8>,
    /// Sink I/O runs in `block_in_place` on a multi-thread runtime.
    offload: bool,
    finished: bool,
}

impl Task {
    async fn run(mut self) {
        let start = tokio::time::Instant::now() + self.window;
        let mut tick = tokio::time::interval_at(start, self.window);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                msg = self.rx.recv() => match msg {
                    None | Some(Msg::Shutdown) => break,
                    Some(Msg::Event(event)) => self.observe(&event),
                    Some(Msg::Flush(ack)) => {
                        self.close_window();
                        let _ = ack.send(());
                    }
                },
                _ = tick.tick() => self.close_window(),
            }
        }
        self.finish();
    }

    fn observe(&mut self, event: &FlowEvent) {
        match self.aggregator.observe(event) {
            Observed::Itemized => {
                self.metrics.flows_itemized.inc();
            }
            Observed::Unitemized => {
                self.metrics.flows_unitemized.inc();
            }
            Observed::NotCovered => {}
        }
    }

    fn close_window(&mut self) {
        let dropped_now = self.metrics.events_dropped.get();
        let dropped = dropped_now - self.dropped_reported;
        self.dropped_reported = dropped_now;
        let closed = self.aggregator.close(Timestamp::now(), dropped);
        if self.offload {
            tokio::task::block_in_place(|| self.write(&closed));
        } else {
            self.write(&closed);
        }
    }

    fn write(&mut self, closed: &Closed) {
        for record in &closed.records {
            self.write_line(record);
        }
        if let Some(u) = &closed.unitemized {
            self.write_line(u);
        }
        if let Err(e) = self.sink.flush() {
            self.write_error("flushing the flow log", &e);
        }
    }

    fn write_line(&mut self, value: &impl serde::Serialize) {
        self.line.clear();
        serde_json::to_writer(&mut self.line, value).expect("a flow record always serializes");
        self.line.push(b'\n');
        let result = self.sink.write_line(&self.line);
        if let Some(e) = result.rotation {
            self.write_error("rotating the flow log", &e);
        }
        match result.written {
            Ok(()) => {
                self.metrics.records_written.inc();
            }
            Err(e) => self.write_error("writing a flow record", &e),
        }
    }

    fn write_error(&self, what: &str, e: &io::Error) {
        self.metrics.write_errors.inc();
        tracing::warn!(target: "flows", error = %e, "{what} failed");
    }

    /// Counts what is still queued and writes the open window. Runs once, at the end of the
    /// task or when the task is dropped (runtime shutdown).
    fn finish(&mut self) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        self.rx.close();
        let mut acks = Vec::new();
        while let Ok(msg) = self.rx.try_recv() {
            match msg {
                Msg::Event(event) => self.observe(&event),
                Msg::Flush(ack) => acks.push(ack),
                Msg::Shutdown => {}
            }
        }
        let dropped = self.metrics.events_dropped.get() - self.dropped_reported;
        let closed = self.aggregator.close(Timestamp::now(), dropped);
        // Directly: this may run while the runtime shuts down.
        self.write(&closed);
        for ack in acks {
            let _ = ack.send(());
        }
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::testing::SharedBuf;
    use crate::flows::FlowLine;
    use crate::flows::aggregate::tests::{event, snapshot};

    fn lines(buf: &SharedBuf) -> Vec<FlowLine> {
        buf.text()
            .lines()
            .map(|l| FlowLine::parse(l).unwrap())
            .collect()
    }

    fn counts(lines: &[FlowLine]) -> (u64, u64, u64) {
        let mut out = (0, 0, 0);
        for l in lines {
            match l {
                FlowLine::Flow(r) => out.0 += r.count,
                FlowLine::Unitemized(u) => {
                    out.1 += u.unitemized.flows;
                    out.2 += u.unitemized.dropped;
                }
                FlowLine::Audit(_) => panic!("an audit record in the flow log"),
            }
        }
        out
    }

    /// A flow log with an hour's window, writing into a buffer.
    fn spawn() -> (FlowLog, FlowLogWriter, SharedBuf, FlowLogMetrics) {
        let buf = SharedBuf::default();
        let metrics = FlowLogMetrics::default();
        let settings = Flows {
            enabled: true,
            window: Duration::from_secs(3600),
            ..Flows::default()
        };
        let (log, writer) = FlowLog::spawn_with_sink(
            Sink::writer(buf.clone()),
            &settings,
            "n1".into(),
            None,
            metrics.clone(),
        );
        (log, writer, buf, metrics)
    }

    #[tokio::test]
    async fn a_flush_writes_the_open_window_and_shutdown_the_rest() {
        let (log, writer, buf, metrics) = spawn();
        let s = snapshot();
        for _ in 0..3 {
            log.record(event(&s, "10.244.1.10", "192.0.2.9:22", None, &[]));
        }
        log.flush().await;
        let first = lines(&buf);
        assert_eq!(first.len(), 1, "{}", buf.text());
        assert_eq!(counts(&first), (3, 0, 0));
        log.record(event(&s, "10.244.1.11", "192.0.2.9:22", None, &[]));
        drop(log);
        writer.shutdown().await;
        assert_eq!(counts(&lines(&buf)), (4, 0, 0));
        assert_eq!(metrics.records_written.get(), 2);
        assert_eq!(metrics.flows_itemized.get(), 4);
    }

    #[tokio::test]
    async fn flows_the_channel_cannot_take_are_reported_in_the_window() {
        let (log, writer, buf, metrics) = spawn();
        let s = snapshot();
        // On this current-thread runtime the aggregator does not run until we await.
        let sent = CHANNEL_CAPACITY as u64 + 1000;
        for _ in 0..sent {
            log.record(event(&s, "10.244.1.10", "192.0.2.9:22", None, &[]));
        }
        assert_eq!(metrics.events_dropped.get(), 1000);
        drop(log);
        writer.shutdown().await;
        let (itemized, unitemized, dropped) = counts(&lines(&buf));
        assert_eq!((unitemized, dropped), (0, 1000));
        assert_eq!(itemized + dropped, sent);
    }
}
