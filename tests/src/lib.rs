//! End-to-end suites for Chokepoint.
//!
//! This crate will own the network-namespace lab (node, pods, outside hosts built with
//! `ip netns` and veth) and the suites that drive the real gateway through it. The
//! policy-engine suites live next to the engine in `gateway/tests/` until the lab exists.
