//! Reading the name a TCP connection shows in its first bytes, without consuming them.
//!
//! The pod speaks first in TLS (the ClientHello) and HTTP (the request head); both may arrive
//! in several segments, so the bytes are peeked again as more arrive, until a parser has what
//! it needs, the bytes stop being TLS or HTTP, the peer closes, or the deadline passes.
//! Whatever was peeked is still in the socket for the relay afterwards.

use std::io;
use std::time::Duration;

use chokepoint_redirect::sockopt;
use tokio::io::Interest;
use tokio::net::TcpStream;

use super::{http, tls};

/// What the first bytes of a connection said about its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shown {
    /// A TLS ClientHello's server name.
    Sni(String),
    /// An HTTP/1.x request's Host header.
    Host(String),
    /// A ClientHello with Encrypted Client Hello: the real name is encrypted; `outer` is the
    /// public name it shows.
    Ech { outer: Option<String> },
    /// No name: TLS without SNI, HTTP without Host, another protocol, the peer closed, or
    /// nothing complete before the deadline.
    Nothing,
    /// An HTTP request with two names ([`http::Request::Conflict`]): refused like a name the
    /// pod may not reach.
    Conflict,
}

/// The largest prefix looked at: whatever parses within it.
const PEEK_LIMIT: usize = if tls::MAX_HELLO_WIRE > http::MAX_HEAD {
    tls::MAX_HELLO_WIRE
} else {
    http::MAX_HEAD
} + 1;

/// Peeks at `stream` until its first bytes show a name or `timeout` passes.
pub async fn shown_name(stream: &TcpStream, timeout: Duration) -> Shown {
    let mut buf = vec![0u8; PEEK_LIMIT];
    tokio::time::timeout(timeout, read_name(stream, &mut buf))
        .await
        .unwrap_or(Shown::Nothing)
}

async fn read_name(stream: &TcpStream, buf: &mut [u8]) -> Shown {
    let mut seen = 0;
    loop {
        let n = match more(stream, buf, seen).await {
            Ok(n) => n,
            Err(_) => return Shown::Nothing,
        };
        if n == 0 || n == seen {
            // Closed, or (n == seen) a full buffer: nothing more will come to parse.
            return Shown::Nothing;
        }
        seen = n;
        if let Some(shown) = judge(&buf[..n]) {
            return shown;
        }
        if n == buf.len() {
            return Shown::Nothing;
        }
    }
}

/// `Some` when `bytes` settle the question; `None` when more bytes are needed.
pub fn judge(bytes: &[u8]) -> Option<Shown> {
    match tls::parse(bytes) {
        tls::ClientHello::Hello { sni, ech: true } => Some(Shown::Ech { outer: sni }),
        tls::ClientHello::Hello { sni, ech: false } => Some(sni.map_or(Shown::Nothing, Shown::Sni)),
        tls::ClientHello::Incomplete => None,
        tls::ClientHello::NotTls => match http::parse(bytes) {
            http::Request::Head { host } => Some(host.map_or(Shown::Nothing, Shown::Host)),
            http::Request::Incomplete => None,
            http::Request::NotHttp => Some(Shown::Nothing),
            http::Request::Conflict => Some(Shown::Conflict),
        },
    }
}

/// Waits until more than `seen` bytes can be peeked (or the peer closed, or `buf` is full)
/// and returns how many are there.
async fn more(stream: &TcpStream, buf: &mut [u8], seen: usize) -> io::Result<usize> {
    loop {
        stream.readable().await?;
        // Reporting WouldBlock while nothing new is there clears tokio's readiness, so the
        // next `readable()` waits for the next segment instead of spinning.
        match stream.try_io(Interest::READABLE, || {
            let n = sockopt::peek_now(stream, buf)?;
            if n > seen || n == 0 || n == buf.len() {
                Ok(n)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            }
        }) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server)
    }

    /// A minimal ClientHello naming `sni`.
    fn client_hello(sni: &str) -> Vec<u8> {
        let name = sni.as_bytes();
        let mut sni_ext = Vec::new();
        sni_ext.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
        sni_ext.push(0);
        sni_ext.extend_from_slice(&(name.len() as u16).to_be_bytes());
        sni_ext.extend_from_slice(name);
        let mut exts = Vec::new();
        exts.extend_from_slice(&0u16.to_be_bytes());
        exts.extend_from_slice(&(sni_ext.len() as u16).to_be_bytes());
        exts.extend_from_slice(&sni_ext);
        let mut body = vec![3, 3];
        body.extend_from_slice(&[0u8; 32]);
        body.push(0); // session id
        body.extend_from_slice(&[0, 2, 0x13, 0x01]); // one cipher suite
        body.extend_from_slice(&[1, 0]); // null compression
        body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
        body.extend_from_slice(&exts);
        let mut hs = vec![1];
        hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend_from_slice(&body);
        let mut rec = vec![22, 3, 1];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend_from_slice(&hs);
        rec
    }

    #[tokio::test]
    async fn a_client_hello_split_across_segments_shows_its_name_and_stays_readable() {
        let (mut client, mut server) = pair().await;
        let hello = client_hello("api.example.com");
        let (head, tail) = hello.split_at(20);
        client.write_all(head).await.unwrap();
        let tail = tail.to_vec();
        let writer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            client.write_all(&tail).await.unwrap();
            client
        });
        let shown = shown_name(&server, Duration::from_secs(5)).await;
        assert_eq!(shown, Shown::Sni("api.example.com".into()));
        let _client = writer.await.unwrap();
        let mut read = vec![0u8; hello.len()];
        server.read_exact(&mut read).await.unwrap();
        assert_eq!(read, hello, "peeking consumed nothing");
    }

    #[tokio::test]
    async fn http_host_is_shown() {
        let (mut client, server) = pair().await;
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: Www.Example.com:8080\r\n\r\n")
            .await
            .unwrap();
        let shown = shown_name(&server, Duration::from_secs(5)).await;
        assert_eq!(shown, Shown::Host("www.example.com".into()));
    }

    #[tokio::test]
    async fn silence_other_protocols_and_a_closed_peer_show_nothing() {
        let (_client, server) = pair().await;
        assert_eq!(
            shown_name(&server, Duration::from_millis(50)).await,
            Shown::Nothing,
            "a server-first protocol: nothing before the deadline"
        );
        let (mut client, server) = pair().await;
        client.write_all(b"SSH-2.0-OpenSSH_9.2\r\n").await.unwrap();
        assert_eq!(
            shown_name(&server, Duration::from_secs(5)).await,
            Shown::Nothing
        );
        let (client, server) = pair().await;
        drop(client);
        assert_eq!(
            shown_name(&server, Duration::from_secs(5)).await,
            Shown::Nothing
        );
    }

    #[tokio::test]
    async fn a_partial_hello_that_never_completes_times_out() {
        let (mut client, server) = pair().await;
        client
            .write_all(&client_hello("a.example")[..30])
            .await
            .unwrap();
        assert_eq!(
            shown_name(&server, Duration::from_millis(100)).await,
            Shown::Nothing
        );
    }
}
