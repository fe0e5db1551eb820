//! Peeks at the first bytes of a TCP connection, without consuming them: the TLS ClientHello's
//! server name (SNI) and the HTTP/1.x Host header. Used to check that a connection accepted
//! by a `domainNames` rule really goes to the name it was allowed for.
//!
//! Both parsers are incremental over a growing prefix: they say `Incomplete` until the bytes
//! they need have arrived, and never panic on anything a pod can send (fuzzed).

pub mod http;
pub mod peek;
pub mod tls;
