//! Traffic capture for Chokepoint.
//!
//! This crate will own everything that steers pod egress into the gateway: the `inet chokepoint`
//! nftables table (TPROXY, or REDIRECT as a fallback), the policy routing that brings transparent
//! replies back, and the socket options (IP_TRANSPARENT, SO_MARK, original destination).
//! Nothing is implemented yet; see the data-path issue.
