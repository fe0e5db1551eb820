//! The first request of a cleartext HTTP connection accepted by name, sent upstream with
//! `Connection: close` so that the connection carries no other (see
//! [`l7::http`](crate::l7::http#one-request-per-connection-accepted-by-name)).

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::l7::http::{self, closing_head, head_len};

/// Reads the pod's first request head (already peeked, so in the socket) and writes it to
/// `upstream` with `Connection: close`, followed by whatever was read past it. The relay
/// takes over after that.
pub async fn send_closing(pod: &mut TcpStream, upstream: &mut TcpStream) -> io::Result<()> {
    let mut buf = vec![0u8; http::MAX_HEAD + 4];
    let mut filled = 0;
    let end = loop {
        if let Some(end) = head_len(&buf[..filled]) {
            break end;
        }
        if filled == buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request head too long",
            ));
        }
        let n = pod.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        filled += n;
    };
    let mut out = closing_head(&buf[..end]);
    out.extend_from_slice(&buf[end..filled]);
    upstream.write_all(&out).await
}
