//! The upstream side: one HTTP/1.1 exchange with the kube2iam-like endpoint (or the real
//! metadata service) over a connection made like the data path's ([`Connector`]: from the
//! pod's own address in TPROXY mode, with the gateway mark).
//!
//! A connection per request keeps the gateway stateless between requests (SDKs fetch
//! credentials every few minutes, not per call). The response is read whole, within the
//! upstream timeout and up to [`MAX_RESPONSE_BYTES`], so a stalling or runaway endpoint cannot
//! hold a pod's connection or the gateway's memory.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use chokepoint_config::settings::CaptureMode;
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::http::request::Parts;
use hyper::{Request, Response, Version};
use hyper_util::rt::TokioIo;

use super::identity::{Who, add_identity, strip_identity};
use super::roles::Role;
use crate::metrics::ErrorKind;
use crate::upstream::Connector;

/// The most bytes of an upstream response body passed on (IMDS user-data, the largest
/// document, is at most 16 KiB).
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// Why there is no upstream response (the pod gets `502`, or `504` for a timeout).
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("the pod has no {0} address to reach the upstream from")]
    NoSourceAddress(&'static str),
    #[error("cannot connect ({0:?})")]
    Connect(ErrorKind),
    #[error("no response within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Http(#[from] hyper::Error),
    #[error("the response body is larger than {MAX_RESPONSE_BYTES} bytes or broke off: {0}")]
    Body(String),
}

/// Where a request goes and as whom.
#[derive(Debug, Clone)]
pub struct Upstream<'a> {
    pub target: SocketAddr,
    /// The connection's source (the pod's IP) and original destination.
    pub peer: SocketAddr,
    pub original: SocketAddr,
    pub who: Who<'a>,
    pub role: Role<'a>,
    /// Add the identity headers (`rewrite`); the real metadata service does not read them.
    pub identify: bool,
}

/// Sends the request upstream and returns the whole response.
pub async fn forward(
    connector: &Connector,
    up: &Upstream<'_>,
    parts: &Parts,
    timeout: Duration,
) -> Result<Response<Full<Bytes>>, UpstreamError> {
    let source = source_address(connector.mode, up)?;
    let request = upstream_request(parts, up);
    let exchange = async {
        let stream = connector
            .connect(SocketAddr::new(source, 0), up.target)
            .await
            .map_err(UpstreamError::Connect)?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        // The connection is driven alongside the exchange and dropped with it (no task
        // outlives a timeout).
        let mut conn = std::pin::pin!(conn);
        let exchange = async {
            let response = sender.send_request(request).await?;
            let (head, body) = response.into_parts();
            let body = Limited::new(body, MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| UpstreamError::Body(e.to_string()))?
                .to_bytes();
            Ok::<_, UpstreamError>(Response::from_parts(head, Full::new(body)))
        };
        tokio::select! {
            r = exchange => r,
            Err(e) = &mut conn => Err(UpstreamError::Http(e)),
        }
    };
    let response = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| UpstreamError::Timeout(timeout))??;
    Ok(downstream_response(response))
}

/// The pod's own address in the upstream's family (TPROXY binds to it). A pod that asked
/// over IPv6 for an IPv4 endpoint is sent from its IPv4 address, and vice versa.
fn source_address(mode: CaptureMode, up: &Upstream<'_>) -> Result<IpAddr, UpstreamError> {
    let peer = up.peer.ip();
    let want_v4 = up.target.is_ipv4();
    if mode == CaptureMode::Redirect || peer.is_ipv4() == want_v4 {
        return Ok(peer);
    }
    let pod_ips = match up.who {
        Who::Pod { pod, .. } => pod.ips.as_slice(),
        _ => &[],
    };
    pod_ips
        .iter()
        .copied()
        .find(|ip| ip.is_ipv4() == want_v4)
        .ok_or(UpstreamError::NoSourceAddress(if want_v4 {
            "IPv4"
        } else {
            "IPv6"
        }))
}

/// Hop-by-hop headers (RFC 9110 §7.6.1): they describe one connection, never the next.
const HOP_BY_HOP: [header::HeaderName; 7] = [
    header::CONNECTION,
    header::HeaderName::from_static("keep-alive"),
    header::HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<header::HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| header::HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for h in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(h);
    }
}

/// The request as the upstream gets it: same method, path and end-to-end headers, HTTP/1.1,
/// the pod's identity headers removed and (in `rewrite` mode) the gateway's added.
fn upstream_request(parts: &Parts, up: &Upstream<'_>) -> Request<Empty<Bytes>> {
    let mut headers = parts.headers.clone();
    remove_hop_by_hop(&mut headers);
    // The request has no body (the handler refused any other); hyper frames it.
    headers.remove(header::CONTENT_LENGTH);
    strip_identity(&mut headers);
    if up.identify {
        add_identity(&mut headers, &up.who, up.peer.ip(), &up.role);
    }
    if !headers.contains_key(header::HOST) {
        // HTTP/1.0 clients may omit it; they asked for the metadata address.
        let host = match up.original.ip() {
            IpAddr::V4(ip) => ip.to_string(),
            IpAddr::V6(ip) => format!("[{ip}]"),
        };
        if let Ok(v) = HeaderValue::from_str(&host) {
            headers.insert(header::HOST, v);
        }
    }
    let target = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let mut request = Request::new(Empty::new());
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = target.parse().unwrap_or_default();
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    request
}

fn downstream_response(mut response: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    remove_hop_by_hop(response.headers_mut());
    // The body is whole now; hyper writes its length.
    response.headers_mut().remove(header::CONTENT_LENGTH);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(raw: &[(&str, &str)], uri: &str) -> Parts {
        let mut b = Request::builder().method("GET").uri(uri);
        for (k, v) in raw {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn up(who: Who<'_>, identify: bool) -> Upstream<'_> {
        Upstream {
            target: "192.0.2.50:8181".parse().unwrap(),
            peer: "10.244.1.10:40000".parse().unwrap(),
            original: "169.254.169.254:80".parse().unwrap(),
            who,
            role: Role::Unannotated,
            identify,
        }
    }

    #[test]
    fn upstream_requests_keep_end_to_end_headers_only() {
        let p = parts(
            &[
                ("host", "169.254.169.254"),
                ("connection", "keep-alive, x-secret"),
                ("x-secret", "1"),
                ("keep-alive", "timeout=5"),
                ("x-aws-ec2-metadata-token", "tok"),
                ("x-chokepoint-pod-namespace", "kube-system"),
                ("content-length", "0"),
            ],
            "/latest/meta-data/iam/security-credentials/?a=b",
        );
        let r = upstream_request(&p, &up(Who::Unknown, true));
        assert_eq!(r.uri(), "/latest/meta-data/iam/security-credentials/?a=b");
        assert_eq!(r.version(), Version::HTTP_11);
        let h = r.headers();
        assert_eq!(h["host"], "169.254.169.254");
        assert_eq!(h["x-aws-ec2-metadata-token"], "tok");
        for gone in [
            "connection",
            "x-secret",
            "keep-alive",
            "content-length",
            "x-chokepoint-pod-namespace",
        ] {
            assert!(!h.contains_key(gone), "{gone}: {h:?}");
        }
        assert_eq!(h["x-chokepoint-pod-ip"], "10.244.1.10");
    }

    #[test]
    fn passthrough_adds_no_identity_and_http_1_0_gets_a_host() {
        let p = parts(&[("x-chokepoint-role", "admin")], "/latest/api/token");
        let r = upstream_request(&p, &up(Who::Unknown, false));
        assert!(
            !r.headers()
                .keys()
                .any(|k| k.as_str().starts_with("x-chokepoint-"))
        );
        assert_eq!(r.headers()["host"], "169.254.169.254");
    }

    #[test]
    fn the_source_is_the_pods_address_of_the_upstreams_family() {
        let mut u = up(Who::Unknown, true);
        assert_eq!(
            source_address(CaptureMode::Tproxy, &u).unwrap(),
            u.peer.ip()
        );
        u.peer = "[fd00:244:1::10]:40000".parse().unwrap();
        assert!(matches!(
            source_address(CaptureMode::Tproxy, &u),
            Err(UpstreamError::NoSourceAddress("IPv4"))
        ));
        assert_eq!(
            source_address(CaptureMode::Redirect, &u).unwrap(),
            u.peer.ip(),
            "REDIRECT connects from the node's own address anyway"
        );
    }
}
