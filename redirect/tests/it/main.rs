//! The integration tests of `chokepoint-redirect`, one module per subject, in one test binary
//! (one link instead of one per file). Run one subject with
//! `cargo test -p chokepoint-redirect --test it netns_tproxy::`.

mod specs;

mod golden;
mod netns_fast_path;
mod netns_install;
mod netns_tproxy;
