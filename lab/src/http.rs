//! A raw HTTP/1.x client for the lab: writes bytes exactly as given (so tests can send
//! malformed, pipelined or smuggling-shaped requests) and parses whatever comes back.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::netns;

/// One parsed response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    /// The status line's version, e.g. `HTTP/1.1`.
    pub version: String,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What one connection saw.
#[derive(Debug, Clone, Default)]
pub struct HttpExchange {
    pub connected: bool,
    /// The responses, in order.
    pub responses: Vec<HttpResponse>,
    /// The connection was reset (refused, or RST later).
    pub reset: bool,
    /// The server closed the connection (EOF) before the deadline.
    pub closed: bool,
    /// The deadline passed with the connection still open.
    pub timed_out: bool,
    /// Bytes after the last complete response (a partial one).
    pub trailing: Vec<u8>,
}

impl HttpExchange {
    /// The first response, or a panic naming what happened instead.
    pub fn first(&self) -> &HttpResponse {
        self.responses
            .first()
            .unwrap_or_else(|| panic!("no HTTP response: {self:?}"))
    }
}

/// Connects from inside `netns`, writes `request` and reads until the server closes or
/// `timeout` passes.
pub fn exchange(netns: &str, to: SocketAddr, request: &[u8], timeout: Duration) -> HttpExchange {
    exchange_in_parts(netns, to, &[request], Duration::ZERO, timeout)
}

/// As [`exchange`], writing `parts` one after the other with `pause` between them.
pub fn exchange_in_parts(
    netns: &str,
    to: SocketAddr,
    parts: &[&[u8]],
    pause: Duration,
    timeout: Duration,
) -> HttpExchange {
    netns::run_in(netns, || client(to, parts, pause, timeout)).unwrap_or_default()
}

fn client(to: SocketAddr, parts: &[&[u8]], pause: Duration, timeout: Duration) -> HttpExchange {
    let mut out = HttpExchange::default();
    let deadline = Instant::now() + timeout;
    let mut stream = match TcpStream::connect_timeout(&to, timeout) {
        Ok(s) => s,
        Err(e) => {
            out.reset = is_reset(&e);
            return out;
        }
    };
    out.connected = true;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(pause);
        }
        if let Err(e) = stream.write_all(part) {
            out.reset = is_reset(&e);
            break;
        }
    }
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            out.timed_out = true;
            break;
        }
        let _ = stream.set_read_timeout(Some(left));
        match stream.read(&mut buf) {
            Ok(0) => {
                out.closed = true;
                break;
            }
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                out.timed_out = true;
                break;
            }
            Err(e) => {
                out.reset = is_reset(&e);
                break;
            }
        }
    }
    let (responses, rest) = parse_responses(&raw, out.closed);
    out.responses = responses;
    out.trailing = rest;
    out
}

fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

/// Splits a byte stream into responses (bodies by `Content-Length`, or up to the close).
pub fn parse_responses(mut raw: &[u8], closed: bool) -> (Vec<HttpResponse>, Vec<u8>) {
    let mut out = Vec::new();
    while let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&raw[..end]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let mut words = status_line.splitn(3, ' ');
        let version = words.next().unwrap_or_default().to_owned();
        let Some(status) = words.next().and_then(|s| s.parse().ok()) else {
            break;
        };
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let body_start = end + 4;
        let length = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse::<usize>().ok());
        let body_end = match length {
            Some(n) if raw.len() >= body_start + n => body_start + n,
            Some(_) => break,
            None if closed => raw.len(),
            None => body_start,
        };
        out.push(HttpResponse {
            status,
            version,
            headers,
            body: String::from_utf8_lossy(&raw[body_start..body_end]).into_owned(),
        });
        raw = &raw[body_end..];
    }
    (out, raw.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_split_by_length_and_by_close() {
        let raw = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nnoHTTP/1.0 200 OK\r\n\r\nrest";
        let (r, rest) = parse_responses(raw, true);
        assert_eq!(r.len(), 3);
        assert_eq!((r[0].status, r[0].body.as_str()), (200, "ok"));
        assert_eq!((r[1].status, r[1].body.as_str()), (403, "no"));
        assert_eq!(r[1].header("content-length"), Some("2"));
        assert_eq!(
            (r[2].version.as_str(), r[2].body.as_str()),
            ("HTTP/1.0", "rest")
        );
        assert!(rest.is_empty());
        let partial = b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\npart";
        let (r, rest) = parse_responses(partial, false);
        assert!(r.is_empty());
        assert_eq!(rest, partial);
    }
}
