//! The integration tests of `chokepoint-config`, one module per subject, in one test binary
//! (one link instead of one per file). Run one subject with
//! `cargo test -p chokepoint-config --test it load::`.

mod common;

mod cluster_validation;
mod developer;
mod fail_closed;
mod inventory;
mod load;
mod network_policy;
mod normalize;
mod staged;
