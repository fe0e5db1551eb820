//! TLS ClientHello parsing, just enough for the server name.

/// What the first bytes of a connection say about TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientHello {
    /// More bytes are needed.
    Incomplete,
    /// Not a TLS handshake (or not a ClientHello).
    NotTls,
    /// A complete ClientHello.
    Hello {
        /// The `server_name` extension's host name, lower-cased, if present.
        sni: Option<String>,
        /// The Encrypted Client Hello extension is present: the SNI is the outer, public name.
        ech: bool,
    },
}

/// A ClientHello larger than this is not waited for (it is treated as not TLS). One TLS
/// record carries at most 16 KiB, and hellos with post-quantum key shares, many extensions
/// or padding outgrow one: such a hello is spread over several records and reassembled.
pub const MAX_HELLO: usize = 64 * 1024;
/// The most bytes the records of one ClientHello may take on the wire: the hello, its
/// handshake header, and the headers of the records it is spread over (at most 5 bytes per
/// record; a hello split into records of a few bytes each is not waited for).
pub const MAX_HELLO_WIRE: usize = MAX_HELLO + 4 + 4 * 1024;

const CONTENT_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const EXT_SERVER_NAME: u16 = 0;
const EXT_ENCRYPTED_CLIENT_HELLO: u16 = 0xfe0d;

/// Parses the TLS records at the start of `buf` (the handshake may span several records).
pub fn parse(buf: &[u8]) -> ClientHello {
    // Reassemble the handshake bytes from consecutive handshake records.
    let mut handshake: Vec<u8> = Vec::new();
    let mut rest = buf;
    loop {
        if rest.len() < 5 {
            return if handshake.is_empty() && !rest.is_empty() && rest[0] != CONTENT_HANDSHAKE {
                ClientHello::NotTls
            } else {
                ClientHello::Incomplete
            };
        }
        let (content, major, len) = (
            rest[0],
            rest[1],
            usize::from(u16::from_be_bytes([rest[3], rest[4]])),
        );
        if content != CONTENT_HANDSHAKE || major != 3 || len == 0 || len > 1 << 14 {
            return ClientHello::NotTls;
        }
        if buf.len() - rest.len() + 5 + len > MAX_HELLO_WIRE {
            return ClientHello::NotTls;
        }
        if rest.len() < 5 + len {
            return ClientHello::Incomplete;
        }
        handshake.extend_from_slice(&rest[5..5 + len]);
        rest = &rest[5 + len..];
        if handshake.len() >= 4 {
            if handshake[0] != HANDSHAKE_CLIENT_HELLO {
                return ClientHello::NotTls;
            }
            let body_len = (usize::from(handshake[1]) << 16)
                | (usize::from(handshake[2]) << 8)
                | usize::from(handshake[3]);
            if body_len > MAX_HELLO {
                return ClientHello::NotTls;
            }
            if handshake.len() >= 4 + body_len {
                return hello_body(&handshake[4..4 + body_len]).unwrap_or(ClientHello::NotTls);
            }
        }
    }
}

/// A bounds-checked reader over a byte slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    /// A vector with a length prefix of `len_bytes` bytes.
    fn vec(&mut self, len_bytes: usize) -> Option<&'a [u8]> {
        let len = match len_bytes {
            1 => usize::from(self.u8()?),
            _ => usize::from(self.u16()?),
        };
        self.take(len)
    }
}

fn hello_body(body: &[u8]) -> Option<ClientHello> {
    let mut r = Reader(body);
    let _version = r.u16()?;
    r.take(32)?; // random
    let session = r.vec(1)?;
    if session.len() > 32 {
        return None;
    }
    r.vec(2)?; // cipher suites
    r.vec(1)?; // compression methods
    if r.0.is_empty() {
        // No extensions at all (very old clients): no SNI.
        return Some(ClientHello::Hello {
            sni: None,
            ech: false,
        });
    }
    let mut exts = Reader(r.vec(2)?);
    let (mut sni, mut ech) = (None, false);
    while !exts.0.is_empty() {
        let kind = exts.u16()?;
        let data = exts.vec(2)?;
        match kind {
            EXT_SERVER_NAME => sni = server_name(data)?,
            EXT_ENCRYPTED_CLIENT_HELLO => ech = true,
            _ => {}
        }
    }
    Some(ClientHello::Hello { sni, ech })
}

/// The `host_name` entry of a `server_name` extension (RFC 6066).
fn server_name(data: &[u8]) -> Option<Option<String>> {
    let mut list = Reader(Reader(data).vec(2)?);
    while !list.0.is_empty() {
        let kind = list.u8()?;
        let name = list.vec(2)?;
        if kind == 0 {
            // A host name is ASCII letters, digits, '-', '_' and '.': anything else is refused
            // rather than compared.
            if name.is_empty()
                || !name
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(b))
            {
                return None;
            }
            let s = std::str::from_utf8(name).ok()?;
            return Some(Some(s.trim_end_matches('.').to_ascii_lowercase()));
        }
    }
    Some(None)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a ClientHello with the given extensions, split into records of at most `record`
    /// bytes of handshake data.
    pub(crate) fn client_hello(
        sni: Option<&str>,
        ech: bool,
        padding: usize,
        record: usize,
    ) -> Vec<u8> {
        let mut exts = Vec::new();
        if let Some(name) = sni {
            let mut entry = vec![0u8];
            entry.extend((name.len() as u16).to_be_bytes());
            entry.extend(name.as_bytes());
            let mut list = (entry.len() as u16).to_be_bytes().to_vec();
            list.extend(entry);
            exts.extend(EXT_SERVER_NAME.to_be_bytes());
            exts.extend((list.len() as u16).to_be_bytes());
            exts.extend(list);
        }
        if ech {
            exts.extend(EXT_ENCRYPTED_CLIENT_HELLO.to_be_bytes());
            exts.extend(4u16.to_be_bytes());
            exts.extend([1, 2, 3, 4]);
        }
        // Padding extension (21), like browsers' large post-quantum hellos.
        exts.extend(21u16.to_be_bytes());
        exts.extend((padding as u16).to_be_bytes());
        exts.extend(std::iter::repeat_n(0u8, padding));
        let mut body = vec![3, 3];
        body.extend([7u8; 32]);
        body.push(32);
        body.extend([9u8; 32]);
        body.extend(4u16.to_be_bytes());
        body.extend([0x13, 0x01, 0x13, 0x02]);
        body.extend([1, 0]);
        body.extend((exts.len() as u16).to_be_bytes());
        body.extend(exts);
        let mut hs = vec![HANDSHAKE_CLIENT_HELLO];
        hs.extend(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend(body);
        let mut out = Vec::new();
        for chunk in hs.chunks(record) {
            out.extend([CONTENT_HANDSHAKE, 3, 1]);
            out.extend((chunk.len() as u16).to_be_bytes());
            out.extend(chunk);
        }
        out
    }

    #[test]
    fn reads_the_server_name() {
        let hello = client_hello(Some("API.Example.com."), false, 0, 16384);
        assert_eq!(
            parse(&hello),
            ClientHello::Hello {
                sni: Some("api.example.com".into()),
                ech: false
            }
        );
    }

    #[test]
    fn every_prefix_is_incomplete_and_records_are_reassembled() {
        // A 2 KB hello in 300-byte records, as large post-quantum hellos arrive.
        let hello = client_hello(Some("a.example.com"), true, 2000, 300);
        for n in 0..hello.len() {
            assert_eq!(parse(&hello[..n]), ClientHello::Incomplete, "prefix {n}");
        }
        assert_eq!(
            parse(&hello),
            ClientHello::Hello {
                sni: Some("a.example.com".into()),
                ech: true
            }
        );
        // Bytes after the hello (a ChangeCipherSpec, early data) do not matter.
        let mut more = hello.clone();
        more.extend([20, 3, 3, 0, 1, 1]);
        assert!(matches!(parse(&more), ClientHello::Hello { .. }));
    }

    #[test]
    fn a_hello_spread_over_several_records_up_to_64_kib_is_read() {
        // 60 KB of padding: three full records and a part.
        let hello = client_hello(Some("big.example.com"), false, 60_000, 16384);
        assert!(hello.len() > 3 * 16384, "{}", hello.len());
        assert_eq!(
            parse(&hello),
            ClientHello::Hello {
                sni: Some("big.example.com".into()),
                ech: false
            }
        );
        assert_eq!(parse(&hello[..hello.len() - 1]), ClientHello::Incomplete);
        // Beyond 64 KiB it is not waited for.
        let huge = client_hello(Some("big.example.com"), false, 65_500, 16384);
        assert_eq!(parse(&huge), ClientHello::NotTls);
        // Nor is one cut into records so small that their headers outgrow the bound.
        let tiny = client_hello(Some("big.example.com"), false, 50_000, 8);
        assert_eq!(parse(&tiny), ClientHello::NotTls);
    }

    #[test]
    fn no_sni_and_not_tls() {
        assert_eq!(
            parse(&client_hello(None, false, 10, 16384)),
            ClientHello::Hello {
                sni: None,
                ech: false
            }
        );
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), ClientHello::NotTls);
        assert_eq!(
            parse(b"\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00"),
            ClientHello::NotTls,
            "a ServerHello"
        );
        let mut bad = client_hello(Some("ex ample.com"), false, 0, 16384);
        assert_eq!(
            parse(&bad),
            ClientHello::NotTls,
            "a name with a space is refused"
        );
        bad.truncate(3);
        assert_eq!(parse(&bad), ClientHello::Incomplete);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            let _ = parse(&bytes);
            let mut tls = vec![22u8, 3, 1];
            tls.extend(&bytes);
            let _ = parse(&tls);
        }

        #[test]
        fn mutated_hellos_never_panic(i in 0usize..200, b in proptest::prelude::any::<u8>()) {
            let mut hello = client_hello(Some("x.example.org"), false, 50, 16384);
            let i = i % hello.len();
            hello[i] = b;
            let _ = parse(&hello);
        }
    }
}
