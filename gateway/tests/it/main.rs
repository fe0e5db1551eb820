//! The integration tests of the `chokepoint` library, one module per subject, in one test
//! binary (one link instead of one per file). Run one subject with
//! `cargo test -p chokepoint --test it semantics::`.

mod common;
mod reference;

mod audit;
mod equivalence;
mod examples;
mod map;
mod parsers;
mod recommend;
mod semantics;
mod staged;
mod status;
