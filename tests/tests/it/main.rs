//! The end-to-end suites, one module per subject, in one test binary (one link instead of one
//! per file). Run one suite with `cargo test -p chokepoint-tests --test it dns::`.

mod attacks;
mod dashboard;
mod data_path;
mod deploy;
mod dns;
mod fast_path;
mod flows;
mod kube_status;
mod kubernetes;
mod metadata;
mod product;
mod rollout;
mod services;
mod staged;
mod status;
