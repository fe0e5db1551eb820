//! DNS interception for Chokepoint.
//!
//! This crate will own the DNS proxy that pod lookups are redirected to: forwarding to the
//! configured upstream, parsing answers (A, AAAA, CNAME chains), and the per-namespace
//! name ↔ IP observation cache with TTLs that `domainNames` rules are matched through.
//! Nothing is implemented yet; see the DNS/FQDN issue.
