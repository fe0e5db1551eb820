#![no_main]
//! Any bytes a pod sends first on a connection: the ClientHello parser must not panic, and a
//! result must not change once more bytes arrive after a complete hello.

use chokepoint::l7::tls::{ClientHello, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let full = parse(data);
    if let ClientHello::Hello { .. } = &full {
        let mut more = data.to_vec();
        more.extend_from_slice(b"\x14\x03\x03\x00\x01\x01");
        assert_eq!(parse(&more), full);
    }
    let mut tls = vec![22u8, 3, 1];
    tls.extend_from_slice(data);
    let _ = parse(&tls);
});
