//! HTTP/1.x request head parsing, just enough for the Host header.

/// What the first bytes of a connection say about HTTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// More bytes are needed.
    Incomplete,
    /// Not an HTTP/1.x request.
    NotHttp,
    /// A complete request head; the Host header (lower-cased, port stripped) if present.
    Head { host: Option<String> },
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
    let mut host = None;
    for line in head.split(|b| *b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        if line[..colon].eq_ignore_ascii_case(b"host") {
            if host.is_some() {
                // Two Host headers: ambiguous on purpose (request smuggling); refuse.
                return Request::NotHttp;
            }
            let value = std::str::from_utf8(&line[colon + 1..])
                .map(str::trim)
                .unwrap_or("");
            host = Some(strip_port(value).trim_end_matches('.').to_ascii_lowercase());
        }
    }
    Request::Head {
        host: host.filter(|h| !h.is_empty()),
    }
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
            Request::NotHttp
        );
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
