//! Upstream TCP connections made on behalf of pods: by the data path ([`crate::proxy::tcp`])
//! and by the metadata handler ([`crate::metadata`]), which both depend on this module and not
//! on each other.

use std::net::SocketAddr;
use std::time::Duration;

use chokepoint_config::settings::{CaptureMode, GatewaySettings};
use chokepoint_redirect::sockopt;
use tokio::net::TcpStream;

use crate::metrics::ErrorKind;

/// How upstream connections are made; the same for every connection of a gateway.
#[derive(Debug, Clone, Copy)]
pub struct Connector {
    /// With TPROXY the socket is bound to the pod's own IP.
    pub mode: CaptureMode,
    /// The gateway mark, which the capture rules skip.
    pub mark: u32,
    /// How long a connect may take.
    pub timeout: Duration,
}

impl Connector {
    pub fn new(settings: &GatewaySettings) -> Connector {
        Connector {
            mode: settings.capture.mode,
            mark: settings.capture.gateway_mark,
            timeout: settings.timeouts.connect,
        }
    }

    /// Connects upstream. With TPROXY the socket is bound to the pod's own IP, so the
    /// destination (and its NetworkPolicies) see the real client; it carries the gateway mark
    /// so that the capture rules skip it.
    pub async fn connect(
        &self,
        pod: SocketAddr,
        original: SocketAddr,
    ) -> Result<TcpStream, ErrorKind> {
        let bind = match self.mode {
            CaptureMode::Tproxy => Some(pod.ip()),
            CaptureMode::Redirect => None,
        };
        let family = socket2::Domain::for_address(original);
        let socket = sockopt::upstream_socket(bind, family, Some(self.mark)).map_err(|e| {
            tracing::warn!(target: "proxy", "cannot create the upstream socket: {e}");
            ErrorKind::ConnectFailed
        })?;
        let socket = tokio::net::TcpSocket::from_std_stream(socket.into());
        match tokio::time::timeout(self.timeout, socket.connect(original)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                Ok(stream)
            }
            Ok(Err(e)) => {
                tracing::debug!(target: "proxy", %original, "connect failed: {e}");
                Err(ErrorKind::ConnectFailed)
            }
            Err(_) => Err(ErrorKind::ConnectTimeout),
        }
    }
}
