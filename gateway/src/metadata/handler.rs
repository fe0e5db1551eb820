//! The pod side: the allowed connection is served as HTTP/1.x by hyper, and every request
//! (pipelined ones included, one after the other) is decided on its own.
//!
//! Per request, against the snapshot in force then: the connection's policy verdict again
//! (a reload may have revoked it: the connection is reset and audited), the pod owning the
//! source IP (a different pod than at the start — IP reuse — resets the connection), then
//! [`decide`](super::decide::decide), then forward or answer.
//!
//! hyper enforces the head limits (`431` for too many or too large headers, `400` for
//! unparsable heads or conflicting `Content-Length`s) and the header read timeout, which
//! also ends keep-alive connections left idle that long.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use chokepoint_config::model::Protocol;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::http::request::Parts;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tracing::Instrument;

use super::Context;
use super::config::MetadataConfig;
use super::decide::{Refusal, RequestVerdict, decide};
use super::forward::{Upstream, UpstreamError, forward};
use super::identity::{PodKey, Who};
use super::metrics::RequestResult;
use crate::audit::{AuditReason, AuditRecord, FlowDetails};
use crate::policy::{Flow, Snapshot, Verdict};

/// The HTTP/1 server settings of the pod side: head limits and the header read timeout.
pub fn http1_builder(config: &MetadataConfig) -> hyper::server::conn::http1::Builder {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_headers(config.max_headers)
        .max_header_size(config.max_header_bytes)
        .max_buf_size(config.buffer_size())
        // A client may half-close after its request and still wants the answer.
        .half_close(true);
    http
}

/// Serves one allowed connection to a metadata address until it closes. `names` are the DNS
/// names the connection was decided with (each request is decided again with them).
pub async fn serve(
    ctx: Context<'_>,
    pod: TcpStream,
    peer: SocketAddr,
    original: SocketAddr,
    names: &[&str],
) {
    let span = tracing::debug_span!("metadata", src = %peer);
    async {
        let config = &ctx.metadata.config;
        let conn = Conn {
            ctx,
            peer,
            original,
            names,
            // Who this connection is from, to notice if the IP changes hands under it.
            pod: Who::of(&ctx.state.snapshot(), peer.ip()).key(),
            resetter: socket2::SockRef::from(&pod).try_clone().ok(),
        };
        let http = http1_builder(config);
        let service = hyper::service::service_fn(|req| conn.request(req));
        let result = http.serve_connection(TokioIo::new(pod), service).await;
        let metrics = &ctx.metadata.metrics;
        match result {
            Ok(()) => {}
            Err(e) if e.is_timeout() => {
                metrics.client_timeouts.inc();
            }
            // hyper has answered 400, 431 or 414 itself.
            Err(e) if e.is_parse() => {
                tracing::debug!(target: "metadata", "refused by the HTTP parser: {e}");
                metrics.count(RequestResult::BadRequest);
            }
            Err(e) => tracing::debug!(target: "metadata", "connection ended: {e}"),
        }
        // Dropping the last descriptor of the pod's socket closes it (with RST when armed).
        drop(conn);
    }
    .instrument(span)
    .await
}

/// The connection is to be reset, not answered (policy revoked, identity changed).
#[derive(Debug, thiserror::Error)]
#[error("metadata connection refused: {0}")]
struct Reset(&'static str);

struct Conn<'a> {
    ctx: Context<'a>,
    peer: SocketAddr,
    original: SocketAddr,
    names: &'a [&'a str],
    pod: Option<PodKey>,
    /// A second descriptor of the pod's socket, to arm a reset while hyper owns the stream.
    resetter: Option<socket2::Socket>,
}

impl Conn<'_> {
    async fn request(&self, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Reset> {
        let snapshot = self.ctx.state.snapshot();
        let flow = Flow {
            src: self.peer.ip(),
            dst: self.original.ip(),
            protocol: Protocol::Tcp,
            port: self.original.port(),
            names: self.names,
            addressed: None,
        };
        let verdict = snapshot.evaluate(&flow);
        if !verdict.is_allowed() {
            self.ctx.auditor.record_denial(
                &snapshot,
                &verdict,
                &FlowDetails::from_flow(&flow, self.peer.port()),
            );
            return Err(self.reset(RequestResult::PolicyDenied, "policy denies it now"));
        }
        let who = Who::of(&snapshot, self.peer.ip());
        if self.pod.is_some() && who.key() != self.pod {
            return Err(self.reset(
                RequestResult::IdentityChanged,
                "another pod owns the source IP now",
            ));
        }
        let (parts, _body) = req.into_parts();
        let config = &self.ctx.metadata.config;
        let response = match decide(config, &who, &parts) {
            RequestVerdict::Refuse(refusal) => {
                if let Some(reason) = &refusal.audit {
                    self.audit(&snapshot, &verdict, &parts, reason.clone());
                }
                self.ctx.metadata.metrics.count(refusal.result);
                answer(&refusal)
            }
            // `decide` refuses everything in deny mode, the only one without a target.
            RequestVerdict::Forward { .. } if config.target(self.original).is_none() => {
                self.ctx.metadata.metrics.count(RequestResult::Disabled);
                answer(&Refusal {
                    status: StatusCode::FORBIDDEN,
                    message: "access to the metadata server is disabled on this node".into(),
                    result: RequestResult::Disabled,
                    audit: None,
                    close: false,
                })
            }
            RequestVerdict::Forward { role } => {
                let target = config.target(self.original).unwrap_or(self.original);
                let up = Upstream {
                    target,
                    peer: self.peer,
                    original: self.original,
                    who,
                    role,
                    identify: config.mode == chokepoint_config::settings::MetadataMode::Rewrite,
                };
                match forward(self.ctx.upstream, &up, &parts, config.upstream_timeout).await {
                    Ok(response) => {
                        self.ctx.metadata.metrics.count(RequestResult::Forwarded);
                        response
                    }
                    Err(e) => {
                        self.ctx
                            .metadata
                            .metrics
                            .count(RequestResult::UpstreamError);
                        tracing::warn!(target: "metadata", %target, "upstream failed: {e}");
                        let status = match e {
                            UpstreamError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
                            _ => StatusCode::BAD_GATEWAY,
                        };
                        answer(&Refusal {
                            status,
                            message: format!("the metadata upstream {target} failed: {e}"),
                            result: RequestResult::UpstreamError,
                            audit: None,
                            close: false,
                        })
                    }
                }
            }
        };
        Ok(response)
    }

    /// Arms a reset of the pod's connection; hyper closes it when the service fails.
    fn reset(&self, result: RequestResult, why: &'static str) -> Reset {
        self.ctx.metadata.metrics.count(result);
        if let Some(s) = &self.resetter {
            let _ = s.set_linger(Some(Duration::ZERO));
        }
        tracing::debug!(target: "metadata", "resetting the connection: {why}");
        Reset(why)
    }

    fn audit(&self, snapshot: &Snapshot, verdict: &Verdict, parts: &Parts, reason: AuditReason) {
        let host = parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok());
        let flow = FlowDetails::new(self.peer, self.original, Protocol::Tcp).host(host);
        let record = AuditRecord::new(self.ctx.auditor.node(), snapshot, verdict, &flow)
            .denied_because(reason)
            .request(parts.method.as_str(), parts.uri.path());
        self.ctx.auditor.record(record);
    }
}

/// The gateway's own answer: the status and `chokepoint: <reason>` on one line.
fn answer(r: &Refusal) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(format!(
        "chokepoint: {}\n",
        r.message
    ))));
    *response.status_mut() = r.status;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if r.close {
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}
