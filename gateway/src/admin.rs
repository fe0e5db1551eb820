//! The admin endpoint on localhost: `/healthz`, `/readyz`, `/metrics`, `/config_dump`,
//! `/policies` (every policy's status and rule hits, see `docs/observability.md`).
//!
//! It runs on its own single-threaded runtime (see `app`), so a slow scrape never competes
//! with the data path's workers.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::state::PolicyState;

/// What the admin endpoint serves.
#[derive(Debug)]
pub struct Admin {
    pub registry: Registry,
    pub state: Arc<PolicyState>,
    /// The settings as loaded, for `/config_dump`.
    pub settings: serde_json::Value,
    /// Set once the capture rules are installed and the first snapshot is loaded.
    pub ready: Arc<AtomicBool>,
}

impl Admin {
    /// Serves until the listener fails; each connection gets its own task.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) -> std::io::Result<()> {
        loop {
            let (stream, _) = listener.accept().await?;
            let admin = self.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let admin = admin.clone();
                    async move { Ok::<_, Infallible>(admin.handle(&req)) }
                });
                if let Err(e) = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!(target: "admin", "connection ended: {e}");
                }
            });
        }
    }

    fn handle(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        if req.method() != Method::GET {
            return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
        }
        match req.uri().path() {
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/readyz" if self.ready.load(Ordering::Acquire) => text(StatusCode::OK, "ready\n"),
            "/readyz" => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: capture rules or first snapshot missing\n",
            ),
            "/metrics" => {
                let mut r = Response::new(Full::new(Bytes::from(crate::metrics::render(
                    &self.registry,
                ))));
                r.headers_mut().insert(
                    hyper::header::CONTENT_TYPE,
                    hyper::header::HeaderValue::from_static(
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
                );
                r
            }
            "/config_dump" => {
                let snapshot = self.state.snapshot();
                let counts = snapshot.counts();
                let dump = serde_json::json!({
                    "settings": self.settings,
                    "snapshot": {
                        "generation": self.state.generation(),
                        "cluster_policies": counts.cluster_policies,
                        "developer_policies": counts.developer_policies,
                        "network_policies": counts.network_policies,
                        "staged_policies": counts.staged_policies,
                        "pods": counts.pods,
                    },
                });
                json(&dump)
            }
            "/policies" => json(&self.state.report()),
            _ => text(
                StatusCode::NOT_FOUND,
                "not found; try /healthz /readyz /metrics /config_dump /policies\n",
            ),
        }
    }
}

fn json(value: &impl serde::Serialize) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(
        serde_json::to_vec_pretty(value).unwrap_or_default(),
    )));
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r
}
