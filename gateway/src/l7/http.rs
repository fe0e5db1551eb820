//! HTTP/1.x request head parsing, just enough for the name the request is for; and the first
//! head rewritten so that the connection carries no second request.
//!
//! # One request per connection accepted by name
//!
//! A connection accepted by name on cleartext HTTP is checked on its first request's name.
//! Left alone, the same connection could carry a second request (keep-alive, or pipelined in
//! the same bytes) for another name on the same IP — a shared CDN address serves any of its
//! tenants. The gateway either inspects every request head, which means finding request
//! boundaries in the client's stream (`Content-Length`, chunked bodies, `Expect`, upgrades),
//! or it refuses reuse. It refuses reuse, by [`closing_head`]: the first request goes out with
//! `Connection: close` (every other `Connection`, `Keep-Alive` and `Proxy-Connection` header
//! removed), and a server that receives it closes the connection after its response
//! (RFC 9112 §9.6) instead of reading another request. Why not find the boundaries: where a
//! body ends is exactly what request smuggling makes two parsers disagree on, and the
//! server's reading is the one that counts; with `close`, no reading of the gateway's has to
//! agree with the server's past the first head. The cost: cleartext keep-alive to names
//! allowed by a `domainNames` rule only (one connection per request, which HTTP clients
//! handle), and no cleartext upgrade (WebSocket) on such connections (`wss://` works: a TLS
//! connection is bound to its SNI as a whole).

/// What the first bytes of a connection say about HTTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// More bytes are needed.
    Incomplete,
    /// Not an HTTP/1.x request.
    NotHttp,
    /// A complete request head, and the name it is for (lower-cased, port stripped): the
    /// authority of an absolute-form target (`GET http://name/ HTTP/1.1`), which servers
    /// honour over Host (RFC 9112 §3.2.2), else the Host header; `None` without either.
    Head { host: Option<String> },
    /// Two names for one request: two Host headers, or a Host other than the absolute-form
    /// target's authority. Servers and proxies pick differently (request smuggling), so such
    /// a request is for no single name.
    Conflict,
}

/// A request head larger than this is not waited for.
pub const MAX_HEAD: usize = 16 * 1024;

/// Parses the request head at the start of `buf`.
pub fn parse(buf: &[u8]) -> Request {
    // The method is a token of upper-case letters followed by a space.
    let method_len = buf.iter().take_while(|b| b.is_ascii_uppercase()).count();
    if method_len == buf.len() {
        return if method_len <= 16 {
            Request::Incomplete
        } else {
            Request::NotHttp
        };
    }
    if method_len == 0 || method_len > 16 || buf[method_len] != b' ' {
        return Request::NotHttp;
    }
    let Some(end) = find(buf, b"\r\n\r\n") else {
        let first_line_done = find(buf, b"\r\n").is_some();
        if first_line_done && !first_line_ok(buf) {
            return Request::NotHttp;
        }
        return if buf.len() > MAX_HEAD {
            Request::NotHttp
        } else {
            Request::Incomplete
        };
    };
    if !first_line_ok(buf) {
        return Request::NotHttp;
    }
    let head = &buf[..end];
    if !crlf_only(head) {
        return Request::Conflict;
    }
    let mut host = None;
    for line in head.split(|b| *b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        if line[..colon].eq_ignore_ascii_case(b"host") {
            if host.is_some() {
                return Request::Conflict;
            }
            let value = std::str::from_utf8(&line[colon + 1..])
                .map(str::trim)
                .unwrap_or("");
            host = Some(normalize_authority(value));
        }
    }
    let host = host.filter(|h| !h.is_empty());
    match absolute_authority(buf) {
        None => Request::Head { host },
        // An absolute-form target without a name (`http:///x`) names nothing.
        Some(a) if a.is_empty() => Request::Conflict,
        Some(a) if host.as_ref().is_some_and(|h| *h != a) => Request::Conflict,
        Some(a) => Request::Head { host: Some(a) },
    }
}

/// The authority of an absolute-form request-target (`scheme://authority/...`), normalised
/// like a Host; `None` for origin-form (`/path`), asterisk-form and authority-form targets.
fn absolute_authority(buf: &[u8]) -> Option<String> {
    let line_end = find(buf, b"\r\n")?;
    let line = std::str::from_utf8(&buf[..line_end]).ok()?;
    let target = line.split(' ').nth(1)?;
    let (scheme, rest) = target.split_once("://")?;
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    // Userinfo (`user@`) is not the host.
    let host = authority.rsplit('@').next().unwrap_or("");
    Some(normalize_authority(host))
}

/// Lower-cased, port and trailing dot removed.
fn normalize_authority(value: &str) -> String {
    strip_port(value).trim_end_matches('.').to_ascii_lowercase()
}

/// Whether every CR and LF of `head` is part of a CRLF. A bare LF ends a line (and a bare LF
/// line the head) for lenient servers but not for strict ones: where such a head ends, and
/// so what it says, depends on who reads it.
fn crlf_only(head: &[u8]) -> bool {
    head.iter().enumerate().all(|(i, b)| match b {
        b'\r' => head.get(i + 1) == Some(&b'\n'),
        b'\n' => i > 0 && head[i - 1] == b'\r',
        _ => true,
    })
}

/// Where the request head at the start of `buf` ends (after its blank line), once complete.
pub fn head_len(buf: &[u8]) -> Option<usize> {
    find(buf, b"\r\n\r\n").map(|end| end + 4)
}

/// The first request head of `head` (up to and including its blank line, see [`head_len`];
/// one [`parse`] found complete) with `Connection: close` right after the request line, and
/// no other `Connection`, `Keep-Alive` or `Proxy-Connection` header (nor their continuation
/// lines); see the [module docs](self). Every other line is kept as it was, CRLF-terminated.
pub fn closing_head(head: &[u8]) -> Vec<u8> {
    let body = head.strip_suffix(b"\r\n\r\n").unwrap_or(head);
    let mut out = Vec::with_capacity(head.len() + 19);
    let mut dropping = false;
    for (i, line) in body.split(|b| *b == b'\n').enumerate() {
        if i == 1 {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        if i > 0 {
            let folded = line.first().is_some_and(|b| *b == b' ' || *b == b'\t');
            if !folded {
                let name = line.split(|b| *b == b':').next().unwrap_or(b"");
                dropping = [&b"connection"[..], b"keep-alive", b"proxy-connection"]
                    .iter()
                    .any(|n| name.trim_ascii().eq_ignore_ascii_case(n));
            }
            if dropping {
                continue;
            }
        }
        out.extend_from_slice(line);
        if !out.ends_with(b"\r") {
            out.push(b'\r');
        }
        out.push(b'\n');
    }
    if !body.contains(&b'\n') {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// `METHOD SP target SP HTTP/1.x`.
fn first_line_ok(buf: &[u8]) -> bool {
    let line_end = find(buf, b"\r\n").unwrap_or(buf.len());
    let line = &buf[..line_end];
    line.ends_with(b" HTTP/1.1") || line.ends_with(b" HTTP/1.0")
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        return rest.split(']').next().unwrap_or("");
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_host_header() {
        let req = b"GET /x HTTP/1.1\r\nUser-Agent: t\r\nhOsT: API.example.com:8080\r\n\r\nbody";
        assert_eq!(
            parse(req),
            Request::Head {
                host: Some("api.example.com".into())
            }
        );
        assert_eq!(
            parse(b"GET / HTTP/1.0\r\n\r\n"),
            Request::Head { host: None }
        );
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nHost: [2001:db8::1]:80\r\n\r\n"),
            Request::Head {
                host: Some("2001:db8::1".into())
            }
        );
    }

    #[test]
    fn prefixes_are_incomplete_and_garbage_is_not_http() {
        let req = b"POST /upload HTTP/1.1\r\nHost: a.example.com\r\n\r\n";
        for n in 0..req.len() - 1 {
            assert_eq!(parse(&req[..n]), Request::Incomplete, "prefix {n}");
        }
        assert_eq!(parse(b"\x16\x03\x01\x02\x00"), Request::NotHttp);
        assert_eq!(parse(b"get / HTTP/1.1\r\n\r\n"), Request::NotHttp);
        assert_eq!(parse(b"GET / SPDY/3\r\n"), Request::NotHttp);
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nHost: a.example.com\r\nHost: b.example.com\r\n\r\n"),
            Request::Conflict
        );
    }

    #[test]
    fn an_absolute_form_target_names_the_request() {
        let head = |target: &str, host: &str| {
            let mut h = format!("GET {target} HTTP/1.1\r\n");
            if !host.is_empty() {
                h.push_str(&format!("Host: {host}\r\n"));
            }
            h.push_str("\r\n");
            parse(h.as_bytes())
        };
        let named = |n: &str| Request::Head {
            host: Some(n.into()),
        };
        assert_eq!(head("http://Evil.Example/x", ""), named("evil.example"));
        assert_eq!(
            head("http://user:pw@evil.example:8080/?q", ""),
            named("evil.example")
        );
        assert_eq!(
            head("HTTP://a.example.", "A.example:80"),
            named("a.example")
        );
        // Servers honour the target over Host: two names is no name.
        assert_eq!(
            head("http://evil.example/", "allowed.example"),
            Request::Conflict
        );
        assert_eq!(head("http:///x", "allowed.example"), Request::Conflict);
        // Origin-form and asterisk-form targets name nothing; Host does.
        assert_eq!(
            head("/http://evil.example/", "a.example"),
            named("a.example")
        );
        assert_eq!(head("*", "a.example"), named("a.example"));
    }

    #[test]
    fn the_first_head_goes_out_asking_the_server_to_close() {
        let head = b"GET / HTTP/1.1\r\nHost: a.example\r\nConnection: keep-alive, Upgrade\r\n  , x\r\nUpgrade: websocket\r\nkeep-alive: timeout=5\r\nProxy-Connection: keep-alive\r\nX-Connection: stays\r\n\r\n";
        assert_eq!(head_len(head), Some(head.len()));
        let mut pipelined = head.to_vec();
        pipelined.extend_from_slice(b"GET / HTTP/1.1\r\nHost: b.example\r\n\r\n");
        assert_eq!(head_len(&pipelined), Some(head.len()));
        assert_eq!(
            String::from_utf8(closing_head(head)).unwrap(),
            "GET / HTTP/1.1\r\nConnection: close\r\nHost: a.example\r\nUpgrade: websocket\r\nX-Connection: stays\r\n\r\n"
        );
        assert_eq!(
            closing_head(b"GET / HTTP/1.0\r\n\r\n"),
            b"GET / HTTP/1.0\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn a_head_with_bare_line_feeds_or_carriage_returns_names_nothing_for_sure() {
        // A lenient server ends this head at the bare LF line: "C: d" is the next request's.
        for head in [
            &b"GET / HTTP/1.1\r\nHost: a.example\n\nHost: b.example\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: a.example\nX: y\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a.example\rX: y\r\n\r\n",
        ] {
            assert_eq!(
                parse(head),
                Request::Conflict,
                "{:?}",
                String::from_utf8_lossy(head)
            );
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
            let _ = parse(&bytes);
            let mut req = b"GET / HTTP/1.1\r\nHost: ".to_vec();
            req.extend(&bytes);
            let _ = parse(&req);
        }
    }
}
