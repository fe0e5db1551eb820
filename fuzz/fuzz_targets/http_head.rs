#![no_main]
//! Any bytes a pod sends first on a connection: the HTTP head parser must not panic.

use chokepoint::l7::http::parse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse(data);
    let mut req = b"GET / HTTP/1.1\r\nHost: ".to_vec();
    req.extend_from_slice(data);
    let _ = parse(&req);
});
